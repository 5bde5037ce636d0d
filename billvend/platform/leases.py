"""Named leases in the database: "one holder at a time, until it expires".

The sweep runs under the ``sweep`` lease so that with several worker
processes one sweep runs at a time. Huey's own ``lock_task`` has no expiry
(a killed holder leaves it set until ``--flush-locks`` clears it, and that
flag, run at every worker start, also clears the lock of a sweep another
worker is still running). A lease row instead carries ``expires_at`` from
the database clock: a holder that dies stops mattering once it expires, and
a starting worker never touches it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import sqlalchemy as sa

from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.models import Lease
from billvend.platform.transactions import unit_of_work

log = logging.getLogger(__name__)


def new_holder() -> str:
    """A holder name unique to this call: ``host:pid:random`` (two threads
    of one process are two holders)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@contextmanager
def held(name: str, ttl_seconds: float) -> Iterator[bool]:
    """Run the ``with`` body under lease ``name`` when it can be taken.

    Yields True if this call took the lease (it is released when the body
    ends, even by an exception), False if another holder has it (the body
    should then do nothing; the next periodic run comes soon enough)::

        with leases.held("sweep", 300) as mine:
            if mine:
                sweep_once()
    """
    holder = new_holder()
    if not acquire(name, holder, ttl_seconds):
        log.info("%s skipped: another holder has the lease", name)
        yield False
        return
    try:
        yield True
    finally:
        release(name, holder)


def acquire(name: str, holder: str, ttl_seconds: float) -> bool:
    """Take lease ``name`` for ``holder`` for ``ttl_seconds`` (database
    clock) if it is free, expired, or already ``holder``'s: ONE unit of work
    (and, the first time, one more that creates the row).

    :returns: True if ``holder`` now holds it.
    """
    try:
        return _acquire(name, holder, ttl_seconds)
    except sa.exc.IntegrityError:
        return False  # another process created the row first, and holds it


@unit_of_work
def _acquire(name: str, holder: str, ttl_seconds: float) -> bool:
    now = db_now()
    expires_at = now + timedelta(seconds=ttl_seconds)
    table = Lease.__table__
    taken = db.session.execute(
        sa.update(table)
        .where(table.c.name == name, sa.or_(table.c.expires_at <= now, table.c.holder == holder))
        .values(holder=holder, expires_at=expires_at)
    ).rowcount == 1
    if taken:
        return True
    if db.session.scalar(sa.select(table.c.name).where(table.c.name == name)) is not None:
        return False  # held by someone else, not expired
    db.session.execute(sa.insert(table).values(name=name, holder=holder, expires_at=expires_at))
    return True


@unit_of_work
def release(name: str, holder: str) -> bool:
    """Give lease ``name`` back if ``holder`` still holds it: ONE unit of work.

    :returns: True if it was ``holder``'s.
    """
    table = Lease.__table__
    now = db_now()
    return db.session.execute(
        sa.update(table).where(table.c.name == name, table.c.holder == holder)
        .values(holder=None, expires_at=now)
    ).rowcount == 1
