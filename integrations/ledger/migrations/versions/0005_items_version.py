"""meta ``<campaign>:items_version`` for every campaign with items (issue 18; data only).

``Ledger.items_frame`` keeps the campaign's items in memory with this key's value, and every
write to the items table gives the key a new random value in the same transaction, so one small
query tells a process whether its copy is current (a round read 10,000 texts five times). A
ledger written before the key existed gets one here, once, instead of a check in every round.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KEY = "{campaign}:items_version"  # = integrations.ledger.core.ITEMS_VERSION after "<campaign>:"
_meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
_items = sa.table("items", sa.column("campaign", sa.String))


def upgrade() -> None:
    bind = op.get_bind()
    have = {key for (key,) in bind.execute(sa.select(_meta.c.key))}
    for (campaign,) in bind.execute(sa.select(_items.c.campaign).distinct()).all():
        key = KEY.format(campaign=campaign)
        if key not in have:
            bind.execute(_meta.insert().values(key=key, value=uuid.uuid4().hex))


def downgrade() -> None:
    bind = op.get_bind()
    bind.execute(_meta.delete().where(_meta.c.key.like("%:items_version")))
