"""Meter verification, cached across processes.

A customer sees the name on a meter before paying (the htmx check, or the
no-JavaScript confirm step), and the pay submit that follows must not make
them wait for the provider again. So every answer that says something about
the meter (``valid``, ``invalid``) is kept in the ``meter_verifications``
table, keyed by (disco, meter type, meter number), shared by every web
process on the embedded SQLite default and on PostgreSQL alike:

* a ``valid`` answer for ``METER_VERIFICATION_TTL_SECONDS`` (600);
* an ``invalid`` one ("no such meter") for the shorter
  ``METER_VERIFICATION_INVALID_TTL_SECONDS`` (60), so a meter the disco has
  just registered, or a typo the disco fixed, is not refused for long;
* an ``error`` (the disco could not answer) never.

Expiry uses the database clock. The provider is called only on a miss,
outside any transaction (the session's read transaction is ended first, so
the thread holds no connection while it waits), with a hard wall-clock
deadline (``METER_VERIFICATION_DEADLINE_SECONDS``): past it the customer is
told the disco could not be reached, and the web thread is free again.

The answer decides nothing about money: it shows a name and refuses an
unknown meter early; the vend is what decides whether a payment succeeds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa
from flask import current_app

from billvend.platform import clock, transactions
from billvend.platform.extensions import db
from billvend.platform.metrics import VERIFICATION_LOOKUPS
from billvend.vending.models import MeterVerificationCache
from billvend.vending.providers.base import MeterVerification, Provider

log = logging.getLogger(__name__)

_TABLE = MeterVerificationCache.__table__
CACHED_STATUSES = ("valid", "invalid")

# Verification calls run here so a request can stop waiting at its deadline;
# a call that overruns finishes (or times out in its own client) on this
# pool, never on a web thread. Sized for many concurrent misses; threads are
# started on demand.
_POOL_LOCK = threading.Lock()
_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _POOL_LOCK:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="verify")
        return _pool


def cached(service_id: str, meter_type: str, meter_number: str) -> Optional[MeterVerification]:
    """The unexpired cached answer for this meter, or None.

    Reads in the session's current transaction (a plain SELECT).
    """
    row = db.session.execute(
        sa.select(_TABLE).where(
            _TABLE.c.service_id == service_id,
            _TABLE.c.meter_type == meter_type,
            _TABLE.c.meter_number == meter_number,
            _TABLE.c.expires_at > clock.sql_now(db.engine.dialect.name),
        )
    ).one_or_none()
    if row is None:
        return None
    return MeterVerification(
        row.status, customer_name=row.customer_name, address=row.address, meter_type=meter_type,
        min_purchase_kobo=row.min_purchase_kobo, message=row.message or "",
        other_meter_type=row.other_meter_type)


def verify(service_id: str, meter_number: str, meter_type: str, provider: Provider) -> MeterVerification:
    """The customer behind a meter: from the cache when fresh, else asked of
    ``provider`` (and cached when the answer is ``valid`` or ``invalid``).

    Call it from a web request with no uncommitted writes in the session: on
    a miss it ends the session's read transaction before the provider call.

    :param service_id: the disco's VTpass ``serviceID``.
    :param meter_type: ``prepaid`` or ``postpaid``.
    :returns: a ``MeterVerification``; ``error`` when the provider did not
        answer within ``METER_VERIFICATION_DEADLINE_SECONDS``.
    :raises transactions.ExternalCallInTransaction: on a miss inside a unit
        of work or with staged writes (a programming error).
    """
    hit = cached(service_id, meter_type, meter_number)
    if hit is not None:
        VERIFICATION_LOOKUPS.labels("hit").inc()
        return hit
    VERIFICATION_LOOKUPS.labels("miss").inc()
    transactions.require_no_transaction("meter verification")
    # End the read transaction: its connection goes back to the pool while
    # the provider answers.
    db.session.rollback()
    result = _call_with_deadline(provider, service_id, meter_number, meter_type)
    if result.status in CACHED_STATUSES:
        try:
            _store(service_id, meter_type, meter_number, result)
        except sa.exc.SQLAlchemyError as exc:
            # The answer is still good for this request; the next one asks again.
            log.warning("could not cache a meter verification: %s", exc)
    return result


def _call_with_deadline(provider: Provider, service_id: str, meter_number: str,
                        meter_type: str) -> MeterVerification:
    app = current_app._get_current_object()  # noqa: SLF001 - for the pool thread
    deadline_seconds = app.config["METER_VERIFICATION_DEADLINE_SECONDS"]

    def call() -> MeterVerification:
        with app.app_context():
            return provider.verify_meter(service_id, meter_number, meter_type)

    future = _executor().submit(call)
    try:
        return future.result(timeout=deadline_seconds)
    except concurrent.futures.TimeoutError:
        log.warning("meter verification at %s passed its %s s deadline", service_id, deadline_seconds)
        return MeterVerification("error", message="The disco did not answer in time")
    except Exception as exc:  # noqa: BLE001 - a verification never breaks the page
        log.warning("meter verification at %s failed: %s", service_id, type(exc).__name__)
        return MeterVerification("error", message="The disco could not be reached")


@transactions.unit_of_work
def _store(service_id: str, meter_type: str, meter_number: str, result: MeterVerification) -> None:
    config = current_app.config
    ttl_seconds = (config["METER_VERIFICATION_TTL_SECONDS"] if result.is_valid
                   else config["METER_VERIFICATION_INVALID_TTL_SECONDS"])
    now = clock.db_now()
    values = dict(
        status=result.status,
        customer_name=(result.customer_name or None) and result.customer_name[:200],
        address=(result.address or None) and result.address[:300],
        min_purchase_kobo=result.min_purchase_kobo,
        message=(result.message or None) and result.message[:500],
        other_meter_type=result.other_meter_type,
        verified_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    key = dict(service_id=service_id, meter_type=meter_type, meter_number=meter_number)
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(_TABLE).values(**key, **values)
    db.session.execute(statement.on_conflict_do_update(index_elements=list(key), set_=values))

