"""Tables and column types of the platform layer: UTC datetimes, leases, worker heartbeats."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional
import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.platform import clock
from billvend.platform.extensions import db


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the simulated clock's under
    ``clock.simulate``, as ``clock.db_now``'s)."""
    simulated = clock.simulated_now()
    return simulated if simulated is not None else datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no offset, so a naive value read back is UTC by construction.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime; use billvend.platform.models.utcnow()")
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Lease(db.Model):
    """A named lease one process holds until ``expires_at`` (database clock):
    the sweep's "one sweeper at a time" lock (``billvend.platform.leases``). A holder
    that dies simply stops renewing; the lease then expires by itself."""

    __tablename__ = "leases"

    name: so.Mapped[str] = so.mapped_column(sa.String(40), primary_key=True)
    holder: so.Mapped[Optional[str]] = so.mapped_column(sa.String(120))
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())


class WorkerHeartbeat(db.Model):
    """The last sign of life of each worker process (admin overview, /metrics),
    written by the consumer's scheduler with the database clock."""

    __tablename__ = "worker_heartbeats"

    name: so.Mapped[str] = so.mapped_column(sa.String(200), primary_key=True)
    concurrency: so.Mapped[int] = so.mapped_column()
    seen_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
