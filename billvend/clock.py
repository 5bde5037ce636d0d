"""The database clock (DESIGN.md, "Transactions and external calls").

Times that decide a lease, a sweep, a requery or a grace period come from
the database, so a web process, a worker and the sweep on different hosts
compare one clock instead of three that drift. PostgreSQL answers
``clock_timestamp()`` (the real time now, not the transaction's start);
SQLite is embedded, so its clock is the host's, read the same way
(``strftime('%Y-%m-%d %H:%M:%f', 'now')``, UTC, millisecond resolution).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from billvend.extensions import db


def db_now() -> datetime:
    """The database's current time, timezone-aware UTC.

    One round trip on the current session's connection (it may begin a
    read-only transaction, which is harmless before an external call: see
    ``transactions.require_no_transaction``).
    """
    session = db.session()
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(sa.text("SELECT clock_timestamp()"))
        return value.astimezone(timezone.utc)
    raw = session.scalar(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
    return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
