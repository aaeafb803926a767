"""Alembic environment of the ledger: always run on the connection integrations/ledger/migrate.py passes.

Why no URL here: the ledger opens its own engine (SQLite pragmas, password-free errors) and
migrates inside it, on open; there is no alembic.ini to point anywhere else.
"""

from __future__ import annotations

from alembic import context

from labelloop.integrations.ledger.schema import metadata

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
