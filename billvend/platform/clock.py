"""The database clock (DESIGN.md, "Transactions and external calls").

Times that decide a lease, a sweep, a requery or a grace period come from
the database, so a web process, a worker and the sweep on different hosts
compare one clock instead of three that drift. PostgreSQL answers
``clock_timestamp()`` (the real time now, not the transaction's start);
SQLite is embedded, so its clock is the host's, read the same way
(``strftime('%Y-%m-%d %H:%M:%f', 'now')``, UTC, millisecond resolution).

The deterministic simulator (tests/simulation, docs/simulation.md) puts all
three of billvend's clocks on one simulated clock with :func:`simulate`:
:func:`db_now`, :func:`sql_now` (then a bound literal) and
``billvend.platform.models.utcnow`` (the models' defaults) all answer its
time. Off by default; when off it costs one ``is None`` test per read.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Optional

import sqlalchemy as sa
import sqlalchemy.orm  # noqa: F401 - sa.orm.Session

from billvend.platform.extensions import db


#: The simulated clock (:func:`simulate`), or None: the real clocks.
_simulated: Optional[Callable[[], datetime]] = None


def simulate(now_fn: Optional[Callable[[], datetime]]) -> None:
    """Put every clock on ``now_fn`` (a callable returning aware UTC
    datetimes), or back on the real clocks with None. For the simulator
    only: production never calls it."""
    global _simulated
    _simulated = now_fn


def simulated_now() -> Optional[datetime]:
    """The simulated clock's time (aware UTC), or None when not simulating."""
    return None if _simulated is None else _simulated().astimezone(timezone.utc)


def _literal_now(now: datetime, dialect_name: str) -> sa.ColumnElement:
    # The simulated time as the SQL the real clock would give: a timestamp
    # on PostgreSQL, text in SQLite's stored format (compared as text).
    if dialect_name == "postgresql":
        return sa.literal(now, sa.DateTime(timezone=True))
    return sa.literal(now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], sa.String())


def sql_now(dialect_name: str) -> sa.ColumnElement:
    """The database clock as an SQL expression, for a statement that compares
    or stores "now" without a round trip of its own: ``clock_timestamp()`` on
    PostgreSQL, ``strftime('%Y-%m-%d %H:%M:%f', 'now')`` (UTC text in the
    format SQLAlchemy stores SQLite datetimes in, so they compare as text)
    on SQLite.

    :param dialect_name: ``db.engine.dialect.name`` (or a connection's).
    """
    if _simulated is not None:
        return _literal_now(simulated_now(), dialect_name)
    if dialect_name == "postgresql":
        return sa.func.clock_timestamp()
    return sa.func.strftime("%Y-%m-%d %H:%M:%f", "now")


def db_now(connection=None) -> datetime:
    """The database's current time, timezone-aware UTC.

    One round trip on ``connection`` (a ``Connection`` or ``Session``),
    default the current session's connection (it may begin a read-only
    transaction, which is harmless before an external call: see
    ``transactions.require_no_transaction``).
    """
    if _simulated is not None:
        return simulated_now()
    connection = connection if connection is not None else db.session()
    bind = connection.get_bind() if isinstance(connection, sa.orm.Session) else connection
    raw = connection.scalar(sa.select(sql_now(bind.dialect.name)))
    if isinstance(raw, datetime):
        return raw.astimezone(timezone.utc)
    return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
