"""The in-process simulated vending provider (``VENDING_PROVIDER=simulated``).

It behaves like a real aggregator: answers after ``delay_seconds``, succeeds
with ``success_rate`` for ordinary meters, and for the deterministic test
meters of ``outcomes.FIXED_BEHAVIOURS`` gives processing, timeout,
no-response, unexpected-response and invalid-meter answers. Its order book
lives in the ``simulator_orders`` table, written on its own connection, so a
requery from any worker process (or after a worker restart) sees what the
original ``vend`` did, and tests can count ``pay`` calls per ``request_id``.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from billvend.vending.models import SimulatorOrder
from billvend.platform.models import utcnow
from billvend.vending.providers import outcomes
from billvend.vending.providers.base import (
    CODE_DUPLICATE, CODE_INVALID_ACCOUNT, CODE_NOT_FOUND, DELIVERED, guard_external_call, FAILED,
    PENDING, MeterVerification, VendResult,
)

_ORDERS = SimulatorOrder.__table__
_NOT_RECEIVED = "not_received"

_MESSAGES = {
    "INVALID_ACCOUNT": "Meter number not found at the disco",
    "SERVICE_UNAVAILABLE": "The disco's vending service is unavailable",
    "INSUFFICIENT_CREDIT": "Provider's float with the disco is too low",
    "TIMEOUT": "The disco did not answer in time",
    "NO_RESPONSE": "No response from the provider",
    "UNEXPECTED_RESPONSE": "The provider's reply could not be understood",
    "PROCESSING": "The disco is processing the order",
    "NOT_FOUND": "The provider has no record of this order",
    "DUPLICATE_REQUEST": "The provider already has an order with this request_id",
}


class SimulatedProvider:
    """A realistic in-process provider; see the module docstring."""

    name = "simulated"

    def __init__(self, engine: Engine, success_rate: float = 0.8, delay_seconds: float = 2.0):
        if not 0.0 <= success_rate <= 1.0:
            raise ValueError("success_rate must be between 0 and 1")
        self.engine = engine
        self.success_rate = success_rate
        self.delay_seconds = delay_seconds

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def verify_meter(self, service_id: str, meter_number: str, meter_type: str) -> MeterVerification:
        """Look up the customer on a meter; ``invalid`` for the unknown meter
        or a prepaid/postpaid mismatch on a test meter."""
        guard_external_call("simulated merchant-verify")
        self._wait(min(self.delay_seconds, 0.5))
        if not outcomes.is_known_meter(meter_number):
            return MeterVerification("invalid", message=_MESSAGES[CODE_INVALID_ACCOUNT])
        actual_type = outcomes.METER_TYPES_OF_TEST_METERS.get(meter_number, meter_type)
        if actual_type != meter_type:
            return MeterVerification(
                "invalid", message=f"This is a {actual_type} meter, not {meter_type}",
                other_meter_type=actual_type,
            )
        name, address = outcomes.customer_for(meter_number, service_id)
        return MeterVerification("valid", customer_name=name, address=address, meter_type=actual_type,
                                 min_purchase_kobo=outcomes.min_purchase_kobo(service_id, actual_type))

    def vend(self, request_id: str, service_id: str, meter_number: str, meter_type: str,
             amount_kobo: int, phone: str) -> VendResult:
        """Place an order; the answer depends on the meter (see ``outcomes``)."""
        guard_external_call("simulated pay")
        self._wait(self.delay_seconds)
        behaviour = outcomes.behaviour_for(meter_number, request_id, self.success_rate)
        with self.engine.begin() as conn:
            bumped = conn.execute(
                sa.update(_ORDERS)
                .where(_ORDERS.c.request_id == request_id)
                .values(pay_calls=_ORDERS.c.pay_calls + 1)
            ).rowcount
            if bumped:
                # The provider de-duplicates on request_id (VTpass ``014``):
                # we must requery, never count this as a new order.
                return VendResult(PENDING, CODE_DUPLICATE, _MESSAGES[CODE_DUPLICATE])
            if not behaviour.recorded:
                status = _NOT_RECEIVED
            elif behaviour.answer == "pending":
                status = PENDING
            else:
                status = behaviour.final
            delivered = status == DELIVERED
            conn.execute(
                sa.insert(_ORDERS).values(
                    request_id=request_id,
                    service_id=service_id,
                    meter_number=meter_number,
                    meter_type=meter_type,
                    amount_kobo=amount_kobo,
                    status=status,
                    code=behaviour.code,
                    token=self._token(request_id, meter_type) if delivered else None,
                    units_kwh=(self._units(meter_number, request_id, amount_kobo, meter_type)
                               if delivered else None),
                    pay_calls=1,
                    requery_calls=0,
                    created_at=utcnow(),
                )
            )
        if behaviour.answer == "delivered":
            return self._delivered(request_id, meter_number, meter_type, amount_kobo)
        if behaviour.answer == "failed":
            return VendResult(FAILED, behaviour.code, _MESSAGES[behaviour.code])
        return VendResult(PENDING, behaviour.code, _MESSAGES[behaviour.code])

    def requery(self, request_id: str, meter_type: str | None = None) -> VendResult:
        """Report an order's state; ``NOT_FOUND`` (definite) if never received."""
        guard_external_call("simulated requery")
        self._wait(min(self.delay_seconds, 0.5))
        with self.engine.begin() as conn:
            order = conn.execute(
                sa.select(_ORDERS).where(_ORDERS.c.request_id == request_id)
            ).one_or_none()
            if order is None or order.status == _NOT_RECEIVED:
                return VendResult(FAILED, CODE_NOT_FOUND, _MESSAGES[CODE_NOT_FOUND])
            values = {"requery_calls": _ORDERS.c.requery_calls + 1}
            status = order.status
            if status == PENDING:
                # A processing order settles by the time it is requeried.
                behaviour = outcomes.behaviour_for(order.meter_number, request_id, self.success_rate)
                status = behaviour.final
                values["status"] = status
                if status == DELIVERED:
                    values["token"] = self._token(request_id, order.meter_type)
                    values["units_kwh"] = self._units(order.meter_number, request_id,
                                                      order.amount_kobo, order.meter_type)
            conn.execute(
                sa.update(_ORDERS).where(_ORDERS.c.request_id == request_id).values(**values)
            )
        if status == DELIVERED:
            return self._delivered(request_id, order.meter_number, order.meter_type, order.amount_kobo)
        return VendResult(FAILED, order.code, _MESSAGES.get(order.code or "", "Failed"))

    @staticmethod
    def _token(request_id: str, meter_type: str) -> str | None:
        return outcomes.token_for(request_id) if meter_type == "prepaid" else None

    @staticmethod
    def _units(meter_number: str, request_id: str, amount_kobo: int, meter_type: str) -> str | None:
        if meter_type != "prepaid":
            return None
        return outcomes.delivery_details_for(meter_number, request_id, amount_kobo).units_kwh

    def _delivered(self, request_id: str, meter_number: str, meter_type: str,
                   amount_kobo: int) -> VendResult:
        reference = outcomes.receipt_reference_for(request_id)
        extras = {}
        if meter_type == "prepaid":
            details = outcomes.delivery_details_for(meter_number, request_id, amount_kobo)
            extras = {"units_kwh": details.units_kwh, "tariff": details.tariff,
                      "debt_kobo": details.debt_kobo, "kct1": details.kct1, "kct2": details.kct2}
        return VendResult(
            DELIVERED,
            code="delivered",
            message="Transaction successful",
            token=self._token(request_id, meter_type),
            receipt_reference=reference,
            exchange_reference=reference,
            **extras,
        )
