"""Per-user memory: history, feedback, personas, on a SQL database (`personalign.memory.store`)."""
