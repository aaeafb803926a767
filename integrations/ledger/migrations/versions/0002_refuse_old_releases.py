"""meta.schema_version 1 -> 2: labelloop releases before Alembic refuse to write an upgraded ledger.

Why: those releases open a ledger by running ``create_all`` and then check ``meta.schema_version``
against their own (1), refusing anything newer. Raising it is what keeps an old labelloop (a
second machine not yet upgraded, a stale venv) from writing to a ledger whose schema it no longer
knows. No table changes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import column, table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_meta = table("meta", column("key"), column("value"))


def upgrade() -> None:
    op.execute(_meta.delete().where(_meta.c.key == "schema_version"))
    op.execute(_meta.insert().values(key="schema_version", value="2"))


def downgrade() -> None:
    op.execute(_meta.update().where(_meta.c.key == "schema_version").values(value="1"))
