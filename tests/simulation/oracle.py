"""The oracle: the simulated world's own books against billvend's database.

After every step, on the rows the step touched (the payments named by the
events it wrote, the credits it posted):

- a ``successful`` payment is one the provider really delivered, with its token;
- no payment whose order the provider had and delivers is refunded, unless an
  admin refunded it while the provider's answer was not "delivered" (an
  uncertain refund, requeried after it);
- no wallet is credited for money the gateway did not take from that customer;
- every payment event is a transition of ``lifecycle.TRANSITIONS`` (or a note
  on the same status);
- the provider never saw a second ``pay`` for one reference;
- each transfer between customers is one a customer asked for (sender, key,
  recipient, amount), once per key.

Every ``FULL_CHECK_EVERY`` steps and at the end: ``check_invariants``. At the
end (:meth:`Oracle.at_end`): every payment and funding final or flagged, every
taken kobo credited or flagged, each balance equal to the books, every message
sent and each for an event that committed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from billvend.adjustments.models import APPROVED, DEBIT, Adjustment
from billvend.funding.models import Funding, GatewayEvent, ReconciliationItem, ReconciliationRun
from billvend.funding.reconciliation import LAGOS
from billvend.ledger import invariants
from billvend.ledger.models import KIND_FUNDING, Transfer, Wallet
from billvend.notifications.models import Message
from billvend.platform.extensions import db
from billvend.ledger import limits
from billvend.transfers import services as transfers
from billvend.transfers.models import P2PTransfer
from billvend.vending import lifecycle as payments
from billvend.vending.models import FINAL_STATUSES, REVERSED, SUCCESSFUL, Payment, PaymentEvent

ADMIN_UNCERTAIN = "Marked failed by "


@dataclass(frozen=True)
class _PaymentNow:
    """The columns of a payment the per-step check reads."""

    id: int
    reference: str
    status: str
    token: str | None


class Oracle:
    def __init__(self, sim) -> None:
        self.sim = sim
        self.violations: list[str] = []
        self.last_event_id = 0
        self.last_transfer_id = 0
        self.last_p2p_id = 0
        # Tables written since the last check: a step that wrote no payment
        # event and no transfer has nothing new to read (most steps).
        self.written: set[str] = {PaymentEvent.__tablename__, Transfer.__tablename__}
        sa.event.listen(Engine, "before_cursor_execute", self._note_write)

    def remove(self) -> None:
        sa.event.remove(Engine, "before_cursor_execute", self._note_write)

    def _note_write(self, conn, cursor, statement: str, parameters, context, executemany) -> None:
        """Every row reaches its table by a statement naming it; anything but
        a SELECT that names a watched table marks it written (over-marking
        only costs a read)."""
        if statement.startswith("SELECT"):
            return
        for table in (PaymentEvent.__tablename__, Transfer.__tablename__):
            if table in statement:
                self.written.add(table)

    def violation(self, text: str) -> None:
        self.violations.append(text)

    # --- after every step ---

    def after_step(self, since: datetime) -> None:
        """Check what the step wrote: every status change and note of a
        payment writes a ``PaymentEvent`` and every credit a ``Transfer``, so
        the rows touched are those named by events and transfers newer than
        the last step's (ids only grow: an index lookup, not a scan), read
        only when the step wrote to their tables."""
        if self.sim.provider.double_pays:
            self.violation(f"the provider got a second pay for {self.sim.provider.double_pays}")
            self.sim.provider.double_pays.clear()
        if not self.written:
            return
        written, self.written = self.written, set()
        with self.sim.app.app_context():
            if PaymentEvent.__tablename__ in written:
                self._check_new_events()
            if Transfer.__tablename__ in written:
                self._check_credits()
                self._check_p2p()
            db.session.rollback()

    def _check_new_events(self) -> None:
        """One read: the new events, each with its payment's columns as they
        are now (what :meth:`_check_payment` reads), not a second query
        loading whole payment objects."""
        events = db.session.execute(
            sa.select(PaymentEvent.id, PaymentEvent.payment_id, PaymentEvent.from_status,
                      PaymentEvent.to_status, Payment.reference, Payment.status, Payment.token)
            .join(Payment, Payment.id == PaymentEvent.payment_id)
            .where(PaymentEvent.id > self.last_event_id).order_by(PaymentEvent.id)).all()
        if events:
            self.last_event_id = events[-1].id
            self._check_events(events)
            touched = {row.payment_id: row for row in events}
            for row in touched.values():
                self._check_payment(_PaymentNow(row.payment_id, row.reference, row.status, row.token))

    def _check_payment(self, payment: Payment) -> None:
        order = self.sim.provider.orders.get(payment.reference)
        if payment.status == SUCCESSFUL:
            if order is None or not order.will_deliver:
                self.violation(f"payment {payment.reference} is successful but the provider never "
                               f"delivered it (plan {order.plan if order else 'never paid'})")
            elif payment.token and payment.token != order.token:
                self.violation(f"payment {payment.reference} shows token {payment.token}, the provider "
                               f"issued {order.token}")
        if payment.status == REVERSED and order is not None and order.had_order and order.will_deliver:
            if not self._excused_refund(payment, order):
                self.violation(f"payment {payment.reference}: the provider had the order and delivers it "
                               f"(plan {order.plan}), yet it was refunded")

    def _excused_refund(self, payment: Payment, order) -> bool:
        if order.plan == "drip" and not order.pay_answered:
            # The worker died before the cut answer reached the database: nothing
            # told it the provider had the order, and VTpass's 015 was a lie
            # past the grace. Only the requeries after the refund can catch
            # it (at_end demands the flag).
            return True
        return self._admin_refund_on_an_answer(payment, order)

    def _admin_refund_on_an_answer(self, payment: Payment, order) -> bool:
        """An admin's refund of an ``unknown`` payment made on a provider answer,
        given at that moment, that was not "delivered" (the admin's call on an
        uncertain order; it is requeried after the refund and flagged if
        delivered). Without such an answer the refund was made blind."""
        failed_at = db.session.execute(
            sa.select(PaymentEvent.created_at, PaymentEvent.message)
            .where(PaymentEvent.payment_id == payment.id, PaymentEvent.to_status == "failed")
            .order_by(PaymentEvent.id.desc())).first()
        if failed_at is None or not (failed_at.message or "").startswith(ADMIN_UNCERTAIN):
            return False
        answers = order.asked_at(failed_at.created_at)
        return bool(answers) and "delivered" not in answers

    def _check_events(self, rows) -> None:
        for _, payment_id, from_status, to_status, *_ in rows:
            legal = (from_status is None and to_status == "pending") or from_status == to_status \
                or to_status in payments.TRANSITIONS.get(from_status, ())
            if not legal:
                self.violation(f"payment {payment_id}: transition {from_status} -> {to_status} is not "
                               "in the lifecycle table")

    def _check_credits(self) -> None:
        rows = db.session.execute(
            sa.select(Transfer.id, Funding.gateway_reference, Funding.user_id, Transfer.amount_kobo,
                      Funding.reference)
            .join(Funding, Funding.id == Transfer.funding_id)
            .where(Transfer.kind == KIND_FUNDING, Transfer.id > self.last_transfer_id)).all()
        for transfer_id, gateway_reference, user_id, amount_kobo, reference in rows:
            self.last_transfer_id = max(self.last_transfer_id, transfer_id)
            taken = self.sim.gateway.taken.get(gateway_reference)
            if taken != (user_id, amount_kobo):
                self.violation(f"funding {reference}: credited {amount_kobo} kobo to user {user_id}, the "
                               f"gateway took {taken} (user, kobo) for {gateway_reference}")

    def _check_p2p(self) -> None:
        """Each new transfer between customers is what its sender asked with
        that key, and keeps the sender within the day's limit (Lagos day)."""
        for row in db.session.scalars(sa.select(P2PTransfer).where(P2PTransfer.id > self.last_p2p_id)):
            self.last_p2p_id = max(self.last_p2p_id, row.id)
            asked = self.sim.p2p_asked.get((row.sender_id, row.idempotency_key), [])
            if (row.recipient_id, row.amount_kobo) not in asked:
                self.violation(f"p2p {row.reference}: user {row.sender_id} sent {row.amount_kobo} kobo to "
                               f"user {row.recipient_id}; with that key they asked {asked} (recipient, kobo)")
            start, end = limits.day_bounds(row.created_at)
            day_total = db.session.scalar(sa.select(sa.func.sum(P2PTransfer.amount_kobo)).where(
                P2PTransfer.sender_id == row.sender_id, P2PTransfer.created_at >= start,
                P2PTransfer.created_at < end))
            limit_kobo = transfers.daily_limit_kobo(row.sender)
            if day_total > limit_kobo:
                self.violation(f"p2p {row.reference}: user {row.sender_id} sent {day_total} kobo on "
                               f"{limits.lagos_day(row.created_at)}, over the daily limit of {limit_kobo}")

    # --- every N steps, and at the end ---

    def full_check(self) -> None:
        with self.sim.app.app_context():
            for found in invariants.check_invariants():
                self.violation(f"invariant {found.invariant}: {found}")
            db.session.rollback()

    # --- the end of the horizon ---

    def at_end(self) -> None:
        with self.sim.app.app_context():
            self._end_payments()
            self._end_fundings()
            self._end_balances()
            self._end_messages()
            db.session.rollback()

    def _end_payments(self) -> None:
        for payment in db.session.scalars(sa.select(Payment)):
            self._check_payment(payment)
            flagged = payment.needs_attention or payment.delivered_after_refund
            if payment.status not in FINAL_STATUSES and not flagged:
                self.violation(f"payment {payment.reference} is still {payment.status}, not flagged")
            order = self.sim.provider.orders.get(payment.reference)
            if (payment.status == REVERSED and order is not None and order.will_deliver
                    and order.had_order and not flagged):
                self.violation(f"payment {payment.reference} delivered by the provider, refunded, "
                               "and never flagged")

    def _end_fundings(self) -> None:
        credited = {ref for ref, in db.session.execute(
            sa.select(Funding.gateway_reference).join(Transfer, Transfer.funding_id == Funding.id))}
        flagged = {ref for ref, in db.session.execute(
            sa.select(Funding.gateway_reference).where(Funding.needs_attention.is_(True)))}
        flagged |= {ref for ref, in db.session.execute(
            sa.select(GatewayEvent.reference).where(GatewayEvent.needs_attention.is_(True)))}
        flagged |= {ref for ref, in db.session.execute(sa.select(ReconciliationItem.gateway_reference))}
        for reference in self.sim.gateway.taken:
            if reference not in credited and reference not in flagged \
                    and not self._day_unreconciled(self.sim.gateway.txs[reference].created_at):
                self.violation(f"the gateway took money for {reference}: never credited, never flagged")
        for funding in db.session.scalars(sa.select(Funding)):
            if funding.status in ("initiated", "pending") and not funding.needs_attention:
                self.violation(f"funding {funding.reference} is still {funding.status}, not flagged")

    def _day_unreconciled(self, when: datetime) -> bool:
        """True when every reconciliation run of ``when``'s Lagos day failed or
        died (each is on the admin's reconciliation page, with its error): the
        admin sees the day was never reconciled. A bank transfer whose webhook
        never came is found by reconciliation alone."""
        day = when.astimezone(LAGOS).date()
        runs = db.session.execute(sa.select(ReconciliationRun.error, ReconciliationRun.finished_at)
                                  .where(ReconciliationRun.day == day)).all()
        return bool(runs) and all(run.error is not None or run.finished_at is None for run in runs)

    def _end_balances(self) -> None:
        """Each balance = verified money in - value delivered - money held
        -/+ money sent to / received from other customers (as they asked)."""
        expected: dict[int, int] = defaultdict(int)
        for transfer in db.session.scalars(sa.select(Transfer).where(Transfer.kind == KIND_FUNDING)):
            funding = db.session.get(Funding, transfer.funding_id)
            if self.sim.gateway.taken.get(funding.gateway_reference) == (funding.user_id, funding.amount_kobo):
                expected[funding.user_id] += funding.amount_kobo
        for payment in db.session.scalars(sa.select(Payment)):
            order = self.sim.provider.orders.get(payment.reference)
            delivered = order is not None and order.will_deliver and order.had_order
            refunded_back = payment.status == REVERSED
            if delivered and refunded_back and payment.delivered_after_refund:
                continue  # flagged for an admin: the customer holds both, on record
            if not refunded_back:
                expected[payment.user_id] -= payment.amount_kobo  # delivered, or held while uncertain
        for row in db.session.scalars(sa.select(P2PTransfer)):
            if (row.recipient_id, row.amount_kobo) in self.sim.p2p_asked.get((row.sender_id, row.idempotency_key), []):
                expected[row.sender_id] -= row.amount_kobo  # money between customers
                expected[row.recipient_id] += row.amount_kobo
        self._end_adjustments(expected)
        for customer in self.sim.customers:
            balance = db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.user_id == customer.user_id))
            if balance != expected[customer.user_id]:
                self.violation(f"user {customer.user_id}: balance {balance} kobo, the world's books say "
                               f"{expected[customer.user_id]}")

    def _end_adjustments(self, expected: dict[int, int]) -> None:
        """Approved adjustments are money the world knows about: each must be one the
        admins meant (``sim.adjust_intents``, by its reason), decided by the second
        admin; its amount joins the customer's books (a debit takes it away)."""
        for row in db.session.scalars(sa.select(Adjustment).where(Adjustment.status == APPROVED)):
            meant = self.sim.adjust_intents.get(row.reason)
            if meant != (row.user_id, row.direction, row.amount_kobo) \
                    or row.decided_by_id != self.sim.second_admin_id:
                self.violation(f"adjustment {row.id} ({row.reason!r}): approved as {row.direction} of "
                               f"{row.amount_kobo} kobo for user {row.user_id} by admin "
                               f"{row.decided_by_id}; the admins meant {meant}")
                continue
            expected[row.user_id] += -row.amount_kobo if row.direction == DEBIT else row.amount_kobo

    def _end_messages_exist(self) -> None:
        """Never lost: a token message for each delivered payment (an admin's
        "resolve delivered" sends none), a refund message for each refund, a
        receipt for each credit."""
        keys = set(db.session.scalars(sa.select(Message.event_key)))
        for payment_id, status, code in db.session.execute(
                sa.select(Payment.id, Payment.status, Payment.provider_code)
                .where(Payment.status.in_((SUCCESSFUL, REVERSED)))):
            what = "token" if status == SUCCESSFUL else "refund"
            if code != "ADMIN_RESOLVED" and f"payment:{payment_id}:{what}" not in keys:
                self.violation(f"payment {payment_id} is {status}, its {what} message was never queued")
        for funding_id, in db.session.execute(sa.select(Transfer.funding_id).where(Transfer.kind == KIND_FUNDING)):
            if f"funding:{funding_id}:credited" not in keys:
                self.violation(f"funding {funding_id} credited, its receipt was never queued")
        for p2p_id, in db.session.execute(sa.select(P2PTransfer.id)):
            for side in ("sent", "received"):
                if f"p2p:{p2p_id}:{side}" not in keys:
                    self.violation(f"p2p {p2p_id}: the {side} message was never queued")
        for adjustment_id, in db.session.execute(sa.select(Adjustment.id).where(
                Adjustment.status == APPROVED, Adjustment.direction != DEBIT)):
            if f"adjustment:{adjustment_id}:credited" not in keys:
                self.violation(f"adjustment {adjustment_id} credited, its message was never queued")

    def _end_messages(self) -> None:
        for message in db.session.scalars(sa.select(Message)):
            if message.status != "sent" or not self.sim.senders.sent.get(message.id):
                self.violation(f"message {message.id} ({message.event_key}) never sent: {message.status}")
            kind, _, rest = message.event_key.partition(":")
            ident, _, what = rest.partition(":")
            if kind == "payment" and ident.isdigit():
                status = db.session.scalar(sa.select(Payment.status).where(Payment.id == int(ident)))
                want = {"token": SUCCESSFUL, "kct": SUCCESSFUL, "refund": REVERSED}.get(what)
                if want and status != want:
                    self.violation(f"message {message.event_key} sent, but payment is {status}")
        self._end_messages_exist()
        sent_ids = set(db.session.scalars(sa.select(Message.id)))
        for message_id in self.sim.senders.sent:
            if message_id not in sent_ids:
                self.violation(f"message {message_id} was sent but its row never committed")
