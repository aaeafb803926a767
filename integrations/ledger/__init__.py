"""The ledger: the campaign's single source of truth (SQLite or PostgreSQL, migrated with Alembic).

* ``schema``: every table (the one schema module);
* ``migrate``: create a new ledger at head, or upgrade an existing one in place, on open;
* ``core``: :class:`Ledger` (items, rounds, queries, tasks, annotations, leases, repairs);
* ``trust``: :class:`TrustStore`, the trust stage's storage, composed into a Ledger as ``ledger.trust``.

Only this package imports SQLAlchemy; callers use the names below.
"""

from labelloop.integrations.ledger.base import LedgerError
from labelloop.integrations.ledger.core import Ledger, RoundRecord, redact_url, sqlite_file
from labelloop.integrations.ledger.schema import SCHEMA_VERSION
from labelloop.integrations.ledger.trust import TrustStore

__all__ = ["SCHEMA_VERSION", "Ledger", "LedgerError", "RoundRecord", "TrustStore", "redact_url", "sqlite_file"]
