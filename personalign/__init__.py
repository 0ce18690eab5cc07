"""personalign: personalized preference alignment of language models."""
import os

# OpenMP threads that busy-wait at every barrier make torch up to 20x slower when the cores are
# shared with another process; sleeping waiters cost little when they are not. Set before torch
# loads (it reads the variable once); an explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
