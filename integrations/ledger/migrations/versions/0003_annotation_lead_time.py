"""annotations.lead_time: seconds the annotator spent on an answer (issue 17; NULL when unknown).

Nullable, no default: the same ALTER on SQLite and PostgreSQL, and an older labelloop reading
the ledger ignores it. A ledger from the release that added the column by hand on open (main
before the migrations took it over) already has it: then there is nothing to add.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _has_column() -> bool:
    return "lead_time" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("annotations")}


def upgrade() -> None:
    if not _has_column():
        op.add_column("annotations", sa.Column("lead_time", sa.Float(), nullable=True))


def downgrade() -> None:
    if _has_column():
        with op.batch_alter_table("annotations") as batch:
            batch.drop_column("lead_time")
