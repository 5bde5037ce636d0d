"""Worker heartbeats: each worker process says it is alive every few seconds
(``worker_heartbeats``, database clock), for the admin overview and /metrics."""

from __future__ import annotations

import socket
import os
from datetime import datetime, timezone
from typing import Optional

import sqlalchemy as sa

from billvend.platform import clock
from billvend.platform.extensions import db
from billvend.platform.models import WorkerHeartbeat

_TABLE = WorkerHeartbeat.__table__


def as_utc(value: Optional[datetime]) -> Optional[datetime]:
    """``value`` as an aware UTC datetime (SQLite hands back naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def process_name() -> str:
    """``host:pid``, this worker process's heartbeat key."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def beat(name: str, concurrency: int) -> None:
    """Record that worker ``name`` (running ``concurrency`` vends at once) is
    alive now, by the database clock. Runs on a connection of its own, in its
    own short transaction, outside any unit of work (the scheduler thread has
    no request or task around it)."""
    with db.engine.begin() as conn:
        now = clock.db_now(conn)
        updated = conn.execute(
            sa.update(_TABLE).where(_TABLE.c.name == name)
            .values(seen_at=now, concurrency=concurrency)).rowcount
        if not updated:
            conn.execute(sa.insert(_TABLE).values(name=name, seen_at=now, concurrency=concurrency))


def forget(name: str) -> None:
    """Remove worker ``name``'s heartbeat (a clean shutdown)."""
    with db.engine.begin() as conn:
        conn.execute(sa.delete(_TABLE).where(_TABLE.c.name == name))


def latest() -> tuple[Optional[datetime], Optional[float], int]:
    """``(last heartbeat, its age in seconds, live concurrency)`` over all
    workers; ``(None, None, 0)`` when no worker ever reported. Ages use the
    database clock; a worker counts as live when seen in the last 60 s."""
    now = clock.db_now()
    rows = db.session.execute(sa.select(WorkerHeartbeat.seen_at, WorkerHeartbeat.concurrency)).all()
    if not rows:
        return None, None, 0
    last = max(as_utc(seen_at) for seen_at, _ in rows)
    live = sum(concurrency for seen_at, concurrency in rows
               if (now - as_utc(seen_at)).total_seconds() < 60)
    return last, max(0.0, (now - last).total_seconds()), live
