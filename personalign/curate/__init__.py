"""Dataset tools: synthetic users, ranking sets, diversity, statistics."""
