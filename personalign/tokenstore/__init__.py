"""The token store: a dataset tokenized once into memory-mapped Arrow."""
