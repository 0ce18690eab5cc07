"""Version 3: user-model states of each user (deleted with the user).

Revision ID: 0003
Revises: 0002
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "user_states",
        sa.Column("user_id", sa.String(200), sa.ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("pairs", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (3, :t)").bindparams(t=time.time()))
