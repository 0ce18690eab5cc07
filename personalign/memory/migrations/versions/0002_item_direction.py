"""Version 2: each history item may carry its AlignX direction vector (JSON), for pba profiles.

Revision ID: 0002
Revises: 0001
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "direction" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("items")}:
        op.add_column("items", sa.Column("direction", sa.Text))
    op.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (2, :t)").bindparams(t=time.time()))
