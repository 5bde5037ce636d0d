"""Read-only queries behind the admin pages.

Lists use keyset pagination (``WHERE (created_at, id) < (:c, :i) ORDER BY
created_at DESC, id DESC LIMIT n``), so a page costs the same at row 50 as at
row 1,000,000; each filter has an index that starts with its column and ends
with ``created_at`` (migrations ``0001`` and ``0002_admin_indexes``).
Aggregates are one grouped query each, never a Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterator, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app

from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.web.forms import parse_int
from billvend.ledger.models import (
    BILLER_CLEARING_WALLET, FUNDING_WALLET, LedgerEntry, Transfer, Wallet,
)
from billvend.vending.models import (
    FAILED, PAYMENT_STATUSES, PENDING, REVERSED, SUCCESSFUL, UNKNOWN, VENDING, Payment,
)
from billvend.accounts.models import AdminAction, User
from billvend.funding.models import Funding
from billvend.platform.models import utcnow
from billvend.vending.lifecycle import LAGOS
from billvend.vending.providers.base import CODE_INSUFFICIENT_CREDIT

PAGE_SIZE = 50
#: The stuck-list kind of a payment refunded, then found delivered.
DELIVERED_AFTER_REFUND = "delivered_after_refund"
#: The stuck-list kind of a payment refunded while uncertain whose last
#: requery after the refund got no definite answer (lifecycle._record_recheck).
REFUND_UNCONFIRMED = "refund_unconfirmed"
IN_FLIGHT_STATUSES = (PENDING, VENDING, UNKNOWN, FAILED)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- Cursors -------------------------------------------------------------------


def encode_cursor(created_at: datetime, row_id: int) -> str:
    """A keyset cursor: ``<microseconds since the epoch>.<id>`` (exact, no float)."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{row_id}"


def decode_cursor(text: Optional[str]) -> Optional[tuple[datetime, int]]:
    """The (created_at, id) in a cursor, or None for a missing or malformed one."""
    if not text:
        return None
    micros_text, _, id_text = text.partition(".")
    micros, row_id = parse_int(micros_text, maximum=10**17 - 1), parse_int(id_text)
    if micros is None or row_id is None:
        return None
    return _EPOCH + timedelta(microseconds=micros), row_id


def lagos_day_start(day: date) -> datetime:
    """Midnight in Lagos at the start of ``day``, as an aware UTC datetime."""
    return datetime.combine(day, time(0), tzinfo=LAGOS).astimezone(timezone.utc)


def lagos_today(now: Optional[datetime] = None) -> date:
    return (now or utcnow()).astimezone(LAGOS).date()


@dataclass
class Page:
    """One keyset page: ``items`` plus the cursor of the next page, if any."""

    items: list[Any]
    next_cursor: Optional[str] = None
    extra: dict = field(default_factory=dict)


# --- Payments -------------------------------------------------------------------


def _filtered(query: sa.Select, filters: dict[str, Any]) -> sa.Select:
    if filters.get("status"):
        query = query.where(Payment.status == filters["status"])
    if filters.get("disco"):
        query = query.where(Payment.service_id == filters["disco"])
    if filters.get("meter_type"):
        query = query.where(Payment.meter_type == filters["meter_type"])
    if filters.get("email"):
        # Resolve the user first, so the (user_id, created_at) index drives
        # the list instead of a join across all payments.
        user_id = db.session.scalar(sa.select(User.id).where(User.email == filters["email"]))
        query = query.where(Payment.user_id == (user_id if user_id is not None else -1))
    if filters.get("date_from"):
        query = query.where(Payment.created_at >= lagos_day_start(filters["date_from"]))
    if filters.get("date_to"):
        query = query.where(Payment.created_at < lagos_day_start(filters["date_to"] + timedelta(days=1)))
    if filters.get("q"):
        q = filters["q"]
        ids = sa.union(
            sa.select(Payment.id).where(Payment.reference == q),
            sa.select(Payment.id).where(Payment.meter_number == q),
        ).subquery()
        query = query.where(Payment.id.in_(sa.select(ids.c.id)))
    return query.order_by(Payment.created_at.desc(), Payment.id.desc())


def payment_query(filters: dict[str, Any]) -> sa.Select:
    """Payments matching admin filters, newest first, with their customer.

    :param filters: any of ``status``, ``disco`` (service_id), ``meter_type``,
        ``email`` (exact, lower case), ``date_from``/``date_to`` (``date``,
        Lagos days, inclusive), ``q`` (a reference or meter number, exact).
    """
    return _filtered(sa.select(Payment).options(so.joinedload(Payment.user)), filters)


#: The columns of the CSV export, in order (``iter_payment_rows``).
EXPORT_COLUMNS = (
    Payment.reference, Payment.created_at, User.email, Payment.service_id, Payment.meter_type,
    Payment.meter_number, Payment.amount_kobo, Payment.status, Payment.provider_code,
    Payment.token, Payment.receipt_reference, Payment.vend_attempts, Payment.requery_count,
    Payment.needs_attention, Payment.finalized_at, Payment.id,
)


def _after(query: sa.Select, cursor: Optional[tuple[datetime, int]]) -> sa.Select:
    if cursor is None:
        return query
    created_at, row_id = cursor
    return query.where(sa.or_(
        Payment.created_at < created_at,
        sa.and_(Payment.created_at == created_at, Payment.id < row_id),
    ))


def payments_page(filters: dict[str, Any], cursor: Optional[str], size: int = PAGE_SIZE) -> Page:
    """One page of :func:`payment_query`, after ``cursor`` (None: the first)."""
    rows = db.session.scalars(
        _after(payment_query(filters), decode_cursor(cursor)).limit(size + 1)
    ).unique().all()
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return Page(list(rows), next_cursor)


def iter_payment_rows(filters: dict[str, Any], batch_size: int = 1000) -> Iterator[sa.Row]:
    """Every payment matching ``filters`` as a row of :data:`EXPORT_COLUMNS`,
    newest first, fetched in keyset batches: an export of a million rows holds
    one batch in memory and loads no ORM objects."""
    query = _filtered(sa.select(*EXPORT_COLUMNS).join(User, User.id == Payment.user_id), filters)
    cursor = None
    while True:
        rows = db.session.execute(_after(query, cursor).limit(batch_size)).all()
        yield from rows
        if len(rows) < batch_size:
            return
        cursor = (rows[-1].created_at, rows[-1].id)


def stuck_conditions(now: Optional[datetime] = None) -> dict[str, sa.ColumnElement]:
    """Why a payment counts as stuck, one SQL condition per kind:

    - ``pending`` older than ``PENDING_GRACE_SECONDS`` (its vend task was lost);
    - ``vending`` claimed longer ago than ``VENDING_LEASE_SECONDS`` (the worker died);
    - ``unknown`` older than ``UNKNOWN_ALERT_AGE_SECONDS`` or flagged ``needs_attention``;
    - ``failed`` not reversed within ``PENDING_GRACE_SECONDS`` (the refund task was
      lost, or a late delivery blocks it: the payment needs an admin);
    - ``delivered_after_refund``: refunded while uncertain, then the provider
      reported the delivery (the customer holds the money AND a token);
    - ``refund_unconfirmed``: refunded while uncertain, and the last requery
      after the refund got no definite answer (flagged ``needs_attention``).
    """
    config = current_app.config
    now = now or db_now()  # the same clock the sweep decides by
    grace = now - timedelta(seconds=config["PENDING_GRACE_SECONDS"])
    lease = now - timedelta(seconds=config["VENDING_LEASE_SECONDS"])
    alert = now - timedelta(seconds=config["UNKNOWN_ALERT_AGE_SECONDS"])
    return {
        PENDING: sa.and_(Payment.status == PENDING, Payment.created_at < grace),
        VENDING: sa.and_(Payment.status == VENDING,
                         sa.or_(Payment.claimed_at.is_(None), Payment.claimed_at < lease)),
        UNKNOWN: sa.and_(Payment.status == UNKNOWN,
                         sa.or_(Payment.needs_attention.is_(True), Payment.created_at < alert)),
        FAILED: sa.and_(Payment.status == FAILED, Payment.updated_at < grace),
        DELIVERED_AFTER_REFUND: sa.and_(Payment.status == REVERSED,
                                        Payment.delivered_after_refund.is_(True)),
        REFUND_UNCONFIRMED: sa.and_(Payment.status == REVERSED, Payment.needs_attention.is_(True),
                                    Payment.delivered_after_refund.is_(False)),
    }


def stuck_page(cursor: Optional[str], size: int = PAGE_SIZE) -> Page:
    """Stuck payments (see :func:`stuck_conditions`), newest first, with
    counts per kind in ``extra["counts"]``."""
    conditions = stuck_conditions()
    rows = db.session.scalars(
        _after(sa.select(Payment).options(so.joinedload(Payment.user))
               .where(sa.or_(*conditions.values()))
               .order_by(Payment.created_at.desc(), Payment.id.desc()),
               decode_cursor(cursor)).limit(size + 1)
    ).unique().all()
    counts = {
        status: db.session.scalar(sa.select(sa.func.count(Payment.id)).where(condition))
        for status, condition in conditions.items()
    }
    page = Page(list(rows[:size]), extra={"counts": counts})
    if len(rows) > size:
        page.next_cursor = encode_cursor(rows[size - 1].created_at, rows[size - 1].id)
    return page


def payment_transfers(payment_id: int) -> list[Transfer]:
    """The transfers a payment caused (debit, reversal), with their entries and wallets."""
    return list(db.session.scalars(
        sa.select(Transfer).where(Transfer.payment_id == payment_id)
        .options(so.selectinload(Transfer.entries).joinedload(LedgerEntry.wallet)
                 .joinedload(Wallet.user))
        .order_by(Transfer.id)
    ).unique())


def payment_actions(payment_id: int) -> list[AdminAction]:
    return list(db.session.scalars(
        sa.select(AdminAction).where(AdminAction.payment_id == payment_id)
        .options(so.joinedload(AdminAction.admin)).order_by(AdminAction.id)
    ))


# --- Overview -------------------------------------------------------------------


@dataclass
class Totals:
    """Money and counts over one period (kobo and counts are ints)."""

    funded_kobo: int = 0
    vended_kobo: int = 0
    refunded_kobo: int = 0
    in_flight_kobo: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    amounts_kobo: dict[str, int] = field(default_factory=dict)

    @property
    def success_rate(self) -> Optional[float]:
        """Successful payments as a percentage of those the provider settled
        (successful, failed, reversed); None when none settled yet."""
        settled = sum(self.counts.get(s, 0) for s in (SUCCESSFUL, FAILED, REVERSED))
        if not settled:
            return None
        return round(100 * self.counts.get(SUCCESSFUL, 0) / settled, 1)

    @property
    def payments(self) -> int:
        return sum(self.counts.values())


def totals(since: Optional[datetime] = None) -> Totals:
    """Funded, vended, refunded and in-flight money, and payments by status,
    for payments created (fundings made) at or after ``since`` (None: all time)."""
    result = Totals(counts={s: 0 for s in PAYMENT_STATUSES},
                    amounts_kobo={s: 0 for s in PAYMENT_STATUSES})
    query = sa.select(Payment.status, sa.func.count(Payment.id),
                      sa.func.coalesce(sa.func.sum(Payment.amount_kobo), 0)).group_by(Payment.status)
    funded = sa.select(sa.func.coalesce(sa.func.sum(Funding.amount_kobo), 0)).where(
        Funding.status == "succeeded")
    if since is not None:
        query = query.where(Payment.created_at >= since)
        funded = funded.where(Funding.created_at >= since)
    for status, count, amount_kobo in db.session.execute(query):
        result.counts[status] = count
        result.amounts_kobo[status] = int(amount_kobo)
    result.funded_kobo = int(db.session.scalar(funded))
    result.vended_kobo = result.amounts_kobo[SUCCESSFUL]
    result.refunded_kobo = result.amounts_kobo[REVERSED]
    result.in_flight_kobo = sum(result.amounts_kobo[s] for s in IN_FLIGHT_STATUSES)
    return result


def system_wallets() -> list[Wallet]:
    return list(db.session.scalars(
        sa.select(Wallet).where(Wallet.system_code.is_not(None)).order_by(Wallet.id)))


def system_balance_kobo(code: str) -> int:
    return db.session.scalar(
        sa.select(Wallet.balance_kobo).where(Wallet.system_code == code)) or 0


@dataclass
class Day:
    day: date
    count: int = 0
    volume_kobo: int = 0
    successful: int = 0
    settled: int = 0

    @property
    def success_rate(self) -> Optional[float]:
        return round(100 * self.successful / self.settled, 1) if self.settled else None


def daily(days: int = 30, today: Optional[date] = None) -> list[Day]:
    """Payments per Lagos day for the last ``days`` days (today included):
    count, volume in kobo, and successful among settled.

    One grouped query; the day of each row is a portable ``CASE`` over the
    day boundaries, so the same SQL runs on SQLite and PostgreSQL.
    """
    today = today or lagos_today()
    first = today - timedelta(days=days - 1)
    starts = [lagos_day_start(first + timedelta(days=i)) for i in range(days)]
    bucket = sa.case(
        *[(Payment.created_at >= starts[i], i) for i in range(days - 1, 0, -1)], else_=0
    ).label("bucket")
    rows = db.session.execute(
        sa.select(bucket, Payment.status, sa.func.count(Payment.id), sa.func.sum(Payment.amount_kobo))
        .where(Payment.created_at >= starts[0])
        .group_by(bucket, Payment.status)
    )
    result = [Day(first + timedelta(days=i)) for i in range(days)]
    for index, status, count, amount_kobo in rows:
        day = result[index]
        day.count += count
        day.volume_kobo += int(amount_kobo or 0)
        if status in (SUCCESSFUL, FAILED, REVERSED):
            day.settled += count
            if status == SUCCESSFUL:
                day.successful += count
    return result


def provider_float_alerts(hours: int = 24) -> int:
    """Payments refused in the last ``hours`` because the provider's own
    balance with the disco ran low (VTpass ``018``, reference/vtpass-api.md:
    "failed, alert admins"): someone must top up the provider account."""
    since = utcnow() - timedelta(hours=hours)
    return db.session.scalar(
        sa.select(sa.func.count(Payment.id))
        .where(Payment.created_at >= since, Payment.provider_code == CODE_INSUFFICIENT_CREDIT))


def overview() -> dict[str, Any]:
    """Everything the overview page shows."""
    return {
        "provider_float_alerts": provider_float_alerts(),
        "today": totals(lagos_day_start(lagos_today())),
        "all_time": totals(),
        "biller_clearing_kobo": system_balance_kobo(BILLER_CLEARING_WALLET),
        "funding_kobo": system_balance_kobo(FUNDING_WALLET),
        "days": daily(),
        "stuck": db.session.scalar(
            sa.select(sa.func.count(Payment.id)).where(sa.or_(*stuck_conditions().values()))),
        DELIVERED_AFTER_REFUND: db.session.scalar(
            sa.select(sa.func.count(Payment.id)).where(stuck_conditions()[DELIVERED_AFTER_REFUND])),
    }


# --- Wallets --------------------------------------------------------------------


def _page_by_id(query: sa.Select, model: Any, before_id: Optional[int], size: int) -> Page:
    """Run ``query`` (ordered by ``model.id`` descending) as one keyset page:
    rows with ``id < before_id``, at most ``size``, and the next cursor."""
    if before_id is not None:
        query = query.where(model.id < before_id)
    rows = db.session.scalars(query.limit(size + 1)).unique().all()
    page = Page(list(rows[:size]))
    if len(rows) > size:
        page.next_cursor = str(rows[size - 1].id)
    return page


def user_wallets_page(email: Optional[str], before_id: Optional[int], size: int = PAGE_SIZE) -> Page:
    """User wallets, newest first (keyset on id), optionally one customer's."""
    query = (sa.select(Wallet).join(Wallet.user).options(so.contains_eager(Wallet.user))
             .where(Wallet.user_id.is_not(None)).order_by(Wallet.id.desc()))
    if email:
        query = query.where(User.email == email)
    return _page_by_id(query, Wallet, before_id, size)


@dataclass
class StatementLine:
    entry: LedgerEntry
    running_kobo: int

    @property
    def consistent(self) -> bool:
        return self.running_kobo == self.entry.balance_after_kobo


def statement_page(wallet: Wallet, before_version: Optional[int], size: int = PAGE_SIZE) -> Page:
    """A wallet's ledger entries, newest first (keyset on ``wallet_version``),
    each with the running balance recomputed from the entries themselves, so
    a row whose stored ``balance_after_kobo`` disagrees stands out."""
    query = (sa.select(LedgerEntry).where(LedgerEntry.wallet_id == wallet.id)
             .options(so.joinedload(LedgerEntry.transfer).joinedload(Transfer.payment))
             .order_by(LedgerEntry.wallet_version.desc()))
    if before_version is not None:
        query = query.where(LedgerEntry.wallet_version < before_version)
    rows = db.session.scalars(query.limit(size + 1)).unique().all()
    page = Page([])
    if len(rows) > size:
        rows = rows[:size]
        page.next_cursor = str(rows[-1].wallet_version)
    if rows:
        running = int(db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(LedgerEntry.delta_kobo), 0))
            .where(LedgerEntry.wallet_id == wallet.id,
                   LedgerEntry.wallet_version <= rows[0].wallet_version)))
        for entry in rows:
            page.items.append(StatementLine(entry, running))
            running -= entry.delta_kobo
    return page


# --- Audit log ------------------------------------------------------------------


def actions_page(before_id: Optional[int], size: int = PAGE_SIZE) -> Page:
    """Admin actions, newest first (keyset on id)."""
    query = (sa.select(AdminAction)
             .options(so.joinedload(AdminAction.admin), so.joinedload(AdminAction.payment))
             .order_by(AdminAction.id.desc()))
    return _page_by_id(query, AdminAction, before_id, size)
