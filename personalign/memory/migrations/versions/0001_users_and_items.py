"""Version 1: users and their history items (without direction vectors).

Revision ID: 0001
Revises:
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("demographic", sa.Text), sa.Column("persona", sa.Text), sa.Column("profile", sa.Text),
        sa.Column("direction", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False), sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(200), sa.ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("comment", sa.Text), sa.Column("chosen", sa.Text), sa.Column("rejected", sa.Text),
        sa.Column("request_id", sa.String(200)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("user_id", "request_id", name="uq_items_user_request"),
    )
    op.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (1, :t)").bindparams(t=time.time()))
