"""Daily limits on money leaving a customer's wallet (issue 27): transfers to
another customer now, withdrawals to a bank next, each kind counted on its own.

A day is the Africa/Lagos calendar day of the ledger transfer's ``created_at``
(the caller passes the database clock, ``billvend.platform.clock.db_now``, as
both the check's "now" and the transfer's ``created_at``), so 23:59 and 00:01
Lagos fall on different days. The limit holds under concurrency only when
the check runs in the same unit of work as the debit, after
:func:`billvend.ledger.services.lock_wallets` has locked the debit wallet:
then a second transfer waits for the first to commit, and its sum includes
the first. The ledger imports no domain: each domain passes its kind and
its limit (``billvend.transfers`` reads ``TRANSFER_DAILY_LIMIT_KOBO`` and
``UNVERIFIED_DAILY_LIMIT_KOBO``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable

import sqlalchemy as sa

from billvend.ledger.models import Transfer
from billvend.ledger.services import LedgerError
from billvend.platform.extensions import db
from billvend.platform.money import format_naira

#: Africa/Lagos: UTC+1 all year (no daylight saving since 1919).
LAGOS = timezone(timedelta(hours=1), "Africa/Lagos")


def lagos_day(now: datetime) -> date:
    """The Africa/Lagos calendar day of ``now`` (an aware datetime)."""
    return now.astimezone(LAGOS).date()


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """``(start, end)`` of ``now``'s Lagos day as aware UTC datetimes: Lagos
    midnight to the next Lagos midnight (end excluded)."""
    start = datetime.combine(lagos_day(now), time.min, tzinfo=LAGOS)
    return start.astimezone(timezone.utc), (start + timedelta(days=1)).astimezone(timezone.utc)


def applicable_limit_kobo(*, limit_kobo: int, unverified_limit_kobo: int,
                          email_verified: bool, phone_verified: bool) -> int:
    """The day's limit (kobo) for an account: ``limit_kobo``, or the smaller
    ``unverified_limit_kobo`` while the account lacks a verified email or a
    verified phone."""
    if email_verified and phone_verified:
        return limit_kobo
    return min(limit_kobo, unverified_limit_kobo)


@dataclass(frozen=True)
class DailyUse:
    """What a wallet has sent of one kind today: ``limit_kobo``, ``spent_kobo``
    (before this transfer), and ``resets_at`` (the next Lagos midnight, aware)."""

    limit_kobo: int
    spent_kobo: int
    resets_at: datetime

    @property
    def left_kobo(self) -> int:
        return max(0, self.limit_kobo - self.spent_kobo)


class DailyLimitExceeded(LedgerError):
    """The transfer would take the wallet past its daily limit. The message
    states the limit, what is left today and when it resets (Lagos time)."""

    def __init__(self, use: DailyUse, amount_kobo: int):
        resets = use.resets_at.astimezone(LAGOS)
        super().__init__(
            f"This is over your daily limit of {format_naira(use.limit_kobo)}. You can send "
            f"{format_naira(use.left_kobo)} more today; the limit resets at midnight "
            f"({resets:%d %b %Y}, 00:00 Lagos time).")
        self.use = use
        self.amount_kobo = amount_kobo


def spent_kobo(wallet_id: int, kinds: Iterable[str], now: datetime) -> int:
    """Kobo debited from ``wallet_id`` by transfers of ``kinds`` during
    ``now``'s Lagos day (by the transfers' ``created_at``)."""
    start, end = day_bounds(now)
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Transfer.amount_kobo), 0))
        .where(Transfer.debit_wallet_id == wallet_id, Transfer.kind.in_(tuple(kinds)),
               Transfer.created_at >= start, Transfer.created_at < end))
    return int(total or 0)


def check_daily_limit(wallet_id: int, kind: str, amount_kobo: int, limit_kobo: int,
                      now: datetime) -> DailyUse:
    """Refuse ``amount_kobo`` more of ``kind`` from ``wallet_id`` today when it
    would pass ``limit_kobo``. Call it after locking the wallet
    (:func:`billvend.ledger.services.lock_wallets`), in the debit's unit.

    :returns: the day's use before this transfer.
    :raises DailyLimitExceeded: ``spent + amount_kobo > limit_kobo``; nothing written.
    """
    use = DailyUse(limit_kobo=limit_kobo, spent_kobo=spent_kobo(wallet_id, (kind,), now),
                   resets_at=day_bounds(now)[1])
    if use.spent_kobo + amount_kobo > limit_kobo:
        raise DailyLimitExceeded(use, amount_kobo)
    return use
