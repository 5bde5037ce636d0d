"""Vending's share of the logs and metrics, handed to the platform's hooks by the app
factory (the platform imports no domain): the request id of a payment task, the disco
label of a requery, and the payments-by-status gauge of ``/metrics``."""

from __future__ import annotations

from typing import Any, Optional

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily

from billvend.platform.extensions import db
from billvend.platform.queue import huey_app
from billvend.vending.models import PAYMENT_STATUSES, Payment

#: The tasks whose first argument is a payment id (``billvend.vending.tasks``).
PAYMENT_TASKS = {"vend", "requery", "reverse"}


def request_id_of_task(task: Any) -> Optional[str]:
    """The request id of the request that created a payment task's payment, or None
    (another task, no such payment, the database unavailable)."""
    if task.name.rsplit(".", 1)[-1] in PAYMENT_TASKS and task.args:
        return _payment_request_id(task.args[0])
    return None


def _payment_request_id(payment_id: Any) -> Optional[str]:
    if not isinstance(payment_id, int):
        return None
    try:
        with huey_app().app_context(), db.engine.connect() as conn:
            return conn.scalar(sa.select(Payment.request_id).where(Payment.id == payment_id))
    except Exception:  # noqa: BLE001 - a log field is never worth failing a task
        return None


def disco_of(reference: str) -> Optional[str]:
    """The disco (``serviceID``) of the payment with ``reference``, or None."""
    # A requery carries only the reference; the disco label comes from the
    # payment, read on a connection of its own that is returned at once, so
    # no transaction is open during the call that follows.
    try:
        with db.engine.connect() as conn:
            return conn.scalar(sa.select(Payment.service_id).where(Payment.reference == reference))
    except Exception:  # noqa: BLE001 - a label is never worth failing a requery
        return None


class PaymentsCollector:
    """``billvend_payments``: payments by status, read from the database when scraped."""

    def collect(self):
        by_status = GaugeMetricFamily("billvend_payments", "Payments by status.", labels=["status"])
        try:
            with db.engine.connect() as conn:
                counts = dict(conn.execute(
                    sa.select(Payment.status, sa.func.count()).group_by(Payment.status)).all())
        except Exception:  # noqa: BLE001 - a scrape reports what it can (the platform logs it)
            counts = {}
        for status in PAYMENT_STATUSES:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
