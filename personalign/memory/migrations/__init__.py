"""Alembic's script directory for the memory database (`personalign.memory.migrate` runs it)."""
