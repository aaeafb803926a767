"""stream_items and stream_files: stream mode's decisions and the arrival files it consumed (issue 17).

New tables only: an older ledger keeps every row, and nothing else changes shape.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _tables() -> set[str]:
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade() -> None:
    have = _tables()
    if "stream_items" not in have:
        op.create_table(
            "stream_items",
            sa.Column("campaign", sa.String(64), primary_key=True),
            sa.Column("item_id", sa.String(256), primary_key=True),
            sa.Column("arrival_file", sa.Text()),
            sa.Column("route", sa.String(16), nullable=False),
            sa.Column("label", sa.String(256)),
            sa.Column("source", sa.String(16)),
            sa.Column("confidence", sa.Float()),
            sa.Column("raw_confidence", sa.Float()),
            sa.Column("predicted_label", sa.String(256)),
            sa.Column("model_version", sa.String(128)),
            sa.Column("threshold", sa.Float()),
            sa.Column("day", sa.String(10), nullable=False),
            sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("sent_at", sa.DateTime(timezone=True)),
        )
    if "stream_files" not in have:
        op.create_table(
            "stream_files",
            sa.Column("campaign", sa.String(64), primary_key=True),
            sa.Column("sha256", sa.String(64), primary_key=True),
            sa.Column("path", sa.Text(), nullable=False),
            sa.Column("rows", sa.Integer(), nullable=False),
            sa.Column("added", sa.Integer(), nullable=False),
            sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    have = _tables()
    for name in ("stream_files", "stream_items"):
        if name in have:
            op.drop_table(name)
