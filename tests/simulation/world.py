"""The simulated outside world: one clock, the provider, the gateway, the message
gateways, and their books (what really happened outside billvend).

Every model answers at billvend's Python interface (``Provider``,
``FundingGateway``, the outbox's senders) with the outcomes the real systems give
(/work/shared/reference: VTpass codes, Paystack statuses), chosen by one seeded
``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Optional

from billvend.funding.gateways import (
    NOT_FOUND, SUCCESS, AccountDetails, Checkout, GatewayError, GatewayTransaction, transaction_from,
)
from billvend.notifications.channels import SendError
from billvend.vending.providers import base as pb
from billvend.vending.providers.base import MeterVerification, VendResult


class SimCrash(BaseException):
    """The simulated process died here. A BaseException, so the services'
    ``except Exception`` (which turn a provider error into "no answer") never
    swallow a death."""


START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


class SimClock:
    """The one clock: ``clock.db_now``, ``clock.sql_now`` and the models'
    ``utcnow`` all read :meth:`now` while the simulation runs."""

    def __init__(self) -> None:
        self.current = START

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


NUL_TEXT = "TRANSACTION\x00 SUCCESSFUL \u202e\x07" + "x" * 3000

#: Provider plans (weight): how the provider will treat one order.
PLANS = (("deliver", 40), ("deliver_nul", 6), ("fail", 14), ("pending", 10),
         ("timeout_vended", 8), ("timeout_not_vended", 8), ("late_record", 5), ("drip", 5),
         ("garbled", 4))
FAIL_CODES = (pb.CODE_INVALID_ACCOUNT, pb.CODE_SERVICE_UNAVAILABLE, "TRANSACTION_FAILED",
              "REVERSED", "BELOW_MINIMUM")


@dataclass
class Order:
    """One order as the provider sees it (``request_id`` = our reference)."""

    reference: str
    plan: str
    amount_kobo: int
    paid_at: datetime
    had_order: bool  # the provider received the request (it will act on it)
    will_deliver: bool
    visible_at: datetime  # requery says 015 before this (records lag)
    pending_left: int = 0
    pay_answered: bool = False  # the pay's own answer reached a process that did not die
    token: str = ""
    delivered_answers: list = field(default_factory=list)  # times it answered "delivered"
    answers: list = field(default_factory=list)  # (time, status) of every answer it gave

    def delivered_told_by(self, when: datetime) -> bool:
        return any(t <= when for t in self.delivered_answers)

    def asked_at(self, when: datetime) -> list[str]:
        """The statuses the provider answered at simulated time ``when``."""
        return [status for t, status in self.answers if t == when and not status.startswith("pay ")]


class SimProvider:
    """The VTpass client's stand-in at the ``Provider`` interface."""

    name = "simulated-world"

    def __init__(self, rng: random.Random, clock: SimClock, grace_seconds: float) -> None:
        self.rng, self.clock, self.grace_seconds = rng, clock, grace_seconds
        self.orders: dict[str, Order] = {}
        self.double_pays: list[str] = []
        self.answered_this_step: list[Order] = []  # pay answers handed to the running process
        self.calm = False  # the end of the horizon: no more faults
        self.crash_chance = 0.0

    def verify_meter(self, service_id, meter_number, meter_type) -> MeterVerification:
        return MeterVerification("valid", customer_name="ADA OBI", address="1 Marina",
                                 meter_type=meter_type)

    def _plan(self) -> str:
        names, weights = zip(*PLANS)
        return self.rng.choices(names, weights)[0]

    def _new_order(self, request_id: str, amount_kobo: int) -> Order:
        plan = self._plan()
        now = self.clock.now()
        had = plan != "timeout_not_vended"
        delivers = plan in ("deliver", "deliver_nul", "timeout_vended", "late_record", "drip", "garbled")
        lag = 0.0
        if plan == "late_record":  # records lag inside the grace: 015 meanwhile
            lag = self.rng.uniform(1, max(2.0, self.grace_seconds * 0.9))
        elif plan == "drip":  # the answer began, then 015 for a long while
            lag = self.rng.uniform(1, 3 * 3600)
        order = Order(request_id, plan, amount_kobo, now, had, delivers, now + timedelta(seconds=lag),
                      token="".join(self.rng.choice("0123456789") for _ in range(20)))
        if plan == "pending":
            order.pending_left = self.rng.randint(1, 6)
            order.will_deliver = self.rng.random() < 0.7
        return order

    def process_died(self) -> None:
        """The process that received this step's pay answers died: they never
        reached the database."""
        for order in self.answered_this_step:
            order.pay_answered = False

    def _maybe_crash(self, where: str) -> None:
        self.crashes.check()
        if not self.calm and self.rng.random() < self.crash_chance:
            raise SimCrash(where)

    def _delivered(self, order: Order, nul: bool = False) -> VendResult:
        order.delivered_answers.append(self.clock.now())
        text = NUL_TEXT if nul else "TRANSACTION SUCCESSFUL"
        return VendResult(pb.DELIVERED, "000", text, token=order.token, units_kwh="42.5",
                          receipt_reference=("RCPT\x00" if nul else "RCPT-") + order.reference,
                          tariff=text if nul else None, answer_began=True)

    def vend(self, request_id, service_id, meter_number, meter_type, amount_kobo, phone) -> VendResult:
        self._maybe_crash("before pay")
        if request_id in self.orders:
            self.double_pays.append(request_id)
            return VendResult(pb.FAILED, pb.CODE_DUPLICATE, "duplicate request_id")
        order = self.orders[request_id] = self._new_order(request_id, amount_kobo)
        self._maybe_crash("after pay, before its answer was recorded")
        order.pay_answered = True
        self.answered_this_step.append(order)
        result = self._pay_answer(order)
        order.answers.append((self.clock.now(), "pay " + result.status))
        return result

    def _pay_answer(self, order: Order) -> VendResult:
        plan = order.plan
        if plan in ("deliver", "deliver_nul"):
            return self._delivered(order, nul=plan == "deliver_nul")
        if plan == "fail":
            code = self.rng.choice(FAIL_CODES)
            return VendResult(pb.FAILED, code, self.rng.choice(["Failed", NUL_TEXT]))
        if plan == "pending":
            return VendResult(pb.PENDING, pb.CODE_PROCESSING, "TRANSACTION PROCESSING")
        if plan == "garbled":
            return VendResult(pb.PENDING, pb.CODE_UNEXPECTED_RESPONSE, "<html>\x00" + "\ufffd" * 900)
        if plan == "drip":  # slow drip past the deadline: cut after the status line
            return VendResult(pb.PENDING, pb.CODE_TIMEOUT, "read timed out", answer_began=True)
        if plan == "timeout_not_vended":
            return VendResult(pb.PENDING, pb.CODE_NO_RESPONSE, "connect timed out")
        return VendResult(pb.PENDING, pb.CODE_TIMEOUT, "read timed out")  # timeout_vended, late_record

    def requery(self, request_id, meter_type=None) -> VendResult:
        result = self._requery(request_id)
        order = self.orders.get(request_id)
        if order is not None:
            order.answers.append((self.clock.now(), result.status))
        return result

    def _requery(self, request_id) -> VendResult:
        self._maybe_crash("before requery")
        if not self.calm and self.rng.random() < 0.05:
            return VendResult(pb.PENDING, pb.CODE_TIMEOUT, "requery timed out")
        order = self.orders.get(request_id)
        if order is None or not order.had_order or self.clock.now() < order.visible_at:
            return VendResult(pb.FAILED, pb.CODE_NOT_FOUND, "REQUEST ID NOT FOUND\x00")
        if order.plan == "pending" and order.pending_left > 0:
            order.pending_left -= 0 if self.calm and order.pending_left > 1 else 1
            if self.calm:
                order.pending_left = 0
            return VendResult(pb.PENDING, pb.CODE_PROCESSING, "TRANSACTION PROCESSING")
        if not order.will_deliver:
            return VendResult(pb.FAILED, "TRANSACTION_FAILED", "TRANSACTION FAILED")
        return self._delivered(order, nul=self.rng.random() < 0.1)


@dataclass
class GatewayTx:
    reference: str
    user_id: int
    amount_kobo: int
    channel: str
    status: str
    customer_code: Optional[str]
    email: str
    paid_at: Optional[datetime] = None
    created_at: Optional[datetime] = None


class SimGateway:
    """The Paystack gateway's stand-in at the ``FundingGateway`` interface.
    ``taken`` is the books: money really taken from each customer, by
    gateway reference -> (user id, kobo)."""

    name = "simworld"

    def __init__(self, rng: random.Random, clock: SimClock) -> None:
        self.rng, self.clock = rng, clock
        self.txs: dict[str, GatewayTx] = {}
        self.taken: dict[str, tuple[int, int]] = {}
        self.users_by_email: dict[str, int] = {}
        self.codes: dict[int, str] = {}
        self.calm = False

    def _fault(self, chance: float, what: str) -> None:
        self.crashes.check()
        if not self.calm and self.rng.random() < chance:
            raise GatewayError(f"simulated {what} timeout")

    def initialize(self, *, email, amount_kobo, reference, callback_url) -> Checkout:
        self._fault(0.03, "initialize")
        self.txs.setdefault(reference, GatewayTx(reference, self.users_by_email[email], amount_kobo,
                                                 "card", "ongoing", None, email,
                                                 created_at=self.clock.now()))
        self._fault(0.03, "initialize answer")  # reached the gateway, answer lost
        return Checkout(f"https://checkout.sim/{reference}", "AC_" + reference, reference)

    def verify(self, reference: str) -> GatewayTransaction:
        self._fault(0.05, "verify")
        tx = self.txs.get(reference)
        if tx is None:
            return GatewayTransaction(reference=reference, status=NOT_FOUND)
        return self.as_transaction(tx)

    def as_transaction(self, tx: GatewayTx) -> GatewayTransaction:
        """``tx`` as Paystack's ``data`` object, read by the real client's
        parser (``transaction_from``: what PaystackGateway returns)."""
        message = self.rng.choice(["Approved", "Approved\x00\u202e" + "y" * 400])
        return transaction_from({
            "reference": tx.reference, "status": tx.status, "amount": tx.amount_kobo, "currency": "NGN",
            "fees": 15, "channel": tx.channel, "gateway_response": message,
            "paid_at": tx.paid_at.isoformat() if tx.paid_at else None,
            "customer": {"email": tx.email, "customer_code": tx.customer_code}})

    def open_dedicated_account(self, *, email, first_name, last_name, phone) -> AccountDetails:
        user_id = self.users_by_email[email]
        code = self.codes.setdefault(user_id, f"CUS_sim{user_id:06d}")
        return AccountDetails(code, f"{9000000000 + user_id}", "BILLVEND/" + first_name, "Sim Bank",
                              "sim-bank")

    def transactions(self, start: datetime, end: datetime) -> list[GatewayTransaction]:
        self._fault(0.05, "transaction list")
        return [self.as_transaction(tx) for tx in self.txs.values()
                if tx.created_at is not None and start <= tx.created_at < end]

    # --- what customers do at the gateway (the books) ---

    def pay_checkout(self, reference: str, outcome: str) -> Optional[GatewayTx]:
        tx = self.txs.get(reference)
        if tx is None or tx.status != "ongoing":
            return None
        tx.status = outcome
        if outcome == SUCCESS:
            tx.paid_at = self.clock.now()
            self.taken[reference] = (tx.user_id, tx.amount_kobo)
        return tx

    def bank_transfer(self, user_id: int, email: str, amount_kobo: int) -> GatewayTx:
        reference = f"T{len(self.txs):08d}{self.rng.getrandbits(32):08x}"
        tx = GatewayTx(reference, user_id, amount_kobo, "dedicated_nuban", SUCCESS,
                       self.codes[user_id], email, paid_at=self.clock.now(), created_at=self.clock.now())
        self.txs[reference] = tx
        self.taken[reference] = (user_id, amount_kobo)
        return tx


class SimSenders:
    """SMTP and SMS stand-ins at the outbox's channel interface: each send
    is recorded (``sent``: message id -> count); some fail, to be retried."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sent: dict[int, int] = {}
        self.calm = False

    def send(self, message, rendered) -> str:
        self.crashes.check()
        if not self.calm and self.rng.random() < 0.1:
            raise SendError("simulated 451 try again later")
        self.sent[message.id] = self.sent.get(message.id, 0) + 1
        return f"sim-{message.id}-{self.sent[message.id]}"
