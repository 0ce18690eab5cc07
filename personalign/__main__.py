"""`python -m personalign` (used by `accelerate launch -m personalign ...`)."""
from personalign.cli import app

app()
