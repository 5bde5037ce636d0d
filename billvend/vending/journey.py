"""What the customer keeps from a successful purchase: the disco's delivery
details on the payment, and the meter in their saved meters.

:func:`record_delivery` is called by ``payments.apply_result`` right after
the ``successful`` transition, in the same unit of work, so a delivery and
its details commit (or roll back) together, and a meter is saved on success
only, never on a failure or refund.
"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from billvend.platform.extensions import db
from billvend.vending.models import Payment, SavedMeter
from billvend.platform.models import utcnow
from billvend.vending.providers.base import VendResult

_KCT_DIGITS = 20


def _digits(value: Optional[str]) -> Optional[str]:
    return value if value and value.isdigit() and len(value) == _KCT_DIGITS else None


def delivery_fields(result: VendResult) -> dict:
    """The Payment columns a delivery fills besides token/units/receipt:
    ``tariff``, ``debt_kobo``, ``kct1``, ``kct2``, ``exchange_reference``;
    values the columns cannot hold are dropped, never stored half."""
    kct1, kct2 = _digits(result.kct1), _digits(result.kct2)
    debt_kobo = result.debt_kobo if isinstance(result.debt_kobo, int) and result.debt_kobo > 0 else None
    return {
        "tariff": (result.tariff or "")[:100] or None,
        "debt_kobo": debt_kobo,
        "kct1": kct1 if kct1 and kct2 else None,
        "kct2": kct2 if kct1 and kct2 else None,
        "exchange_reference": (result.exchange_reference or "")[:64] or None,
    }


def record_delivery(payment_id: int, result: VendResult) -> None:
    """Copy a delivery's extra details onto the payment and save its meter.

    Runs in the caller's transaction (the one that made the payment
    ``successful``); flushes, never commits. The saved meter is an upsert
    (INSERT ... ON CONFLICT DO UPDATE on SQLite and PostgreSQL), so two
    deliveries for the same meter racing in two workers cannot fail the unit.

    :param payment_id: a payment just moved to ``successful``.
    :param result: the ``delivered`` provider answer.
    """
    fields = {name: value for name, value in delivery_fields(result).items() if value is not None}
    if fields:
        db.session.execute(
            sa.update(Payment).where(Payment.id == payment_id).values(**fields)
            .execution_options(synchronize_session=False)
        )
    save_meter(payment_id)


def save_meter(payment_id: int) -> None:
    """Add (or refresh) the payment's meter in its owner's saved meters: the
    verified name, the amount and phone last used, one more purchase."""
    payment = db.session.execute(
        sa.select(Payment.user_id, Payment.service_id, Payment.meter_type, Payment.meter_number,
                  Payment.customer_name, Payment.amount_kobo, Payment.phone)
        .where(Payment.id == payment_id)
    ).one_or_none()
    if payment is None:
        return
    now = utcnow()
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = SavedMeter.__table__
    statement = insert(table).values(
        user_id=payment.user_id, service_id=payment.service_id, meter_type=payment.meter_type,
        meter_number=payment.meter_number, customer_name=payment.customer_name,
        last_amount_kobo=payment.amount_kobo, last_phone=payment.phone,
        purchase_count=1, last_paid_at=now, created_at=now,
    )
    excluded = statement.excluded
    db.session.execute(statement.on_conflict_do_update(
        index_elements=[table.c.user_id, table.c.service_id, table.c.meter_number],
        set_={
            "meter_type": excluded.meter_type,
            "customer_name": sa.func.coalesce(excluded.customer_name, table.c.customer_name),
            "last_amount_kobo": excluded.last_amount_kobo,
            "last_phone": excluded.last_phone,
            "purchase_count": table.c.purchase_count + 1,
            "last_paid_at": excluded.last_paid_at,
        },
    ))
