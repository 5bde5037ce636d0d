"""A hypothesis state machine over the money operations, on both backends.

Random sequences of fund / pay / repeat a payment / claim / succeed / fail /
reverse / transfer to or from a second customer (and repeat a transfer) / adjust
(an approved credit, debit or bonus, issue 27) run
against the real service layer; after every step every invariant must hold
and both wallets must hold exactly what a plain Python model of the rules
says (the transfers' daily limit included: the clocks stand at one Lagos
noon, so no run crosses midnight).
"""

from __future__ import annotations

import itertools
import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import current_app
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from billvend.adjustments import services as adjustments
from billvend.funding import seed
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.ledger import limits
from billvend.platform import clock
from billvend.transfers import services as transfers
from billvend.vending import lifecycle as payments
from billvend.platform.extensions import db
from billvend.vending.models import FAILED, PENDING, REVERSED, SUCCESSFUL, VENDING, Payment
from billvend.accounts.models import User
from billvend.ledger.models import Wallet
from tests.helpers import make_user

AMOUNTS_KOBO = st.integers(min_value=1, max_value=200_000)
#: The machine's daily transfer limit: low enough for a run to reach it.
TRANSFER_LIMIT_KOBO = 400_000
LAGOS_NOON = datetime(2026, 12, 7, 11, 0, tzinfo=timezone.utc)


def reset_database() -> None:
    """Empty every table (faster than drop/create per example)."""
    db.session.rollback()
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())
    ledger.ensure_system_wallets()


class MoneyMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        reset_database()
        user = make_user()
        self.user_id, self.email = user.id, user.email
        # Two admins for four eyes (no password of their own: nobody signs in here).
        admins = [User(email=f"admin{i}@example.com", is_admin=True, password_hash=user.password_hash)
                  for i in range(2)]
        db.session.add_all(admins)
        db.session.commit()
        self.admin_ids = [a.id for a in admins]
        self.balance_kobo = 0  # the model
        self.status: dict[int, str] = {}
        self.amount: dict[int, int] = {}
        self.keys: dict[int, str] = {}
        self.friend_id = make_user().id
        self.friend_balance_kobo = 0
        self.sent_today = {self.user_id: 0, self.friend_id: 0}
        self.transfers: list[tuple[int, str, int]] = []  # (transfer id, key, amount) sent by user
        ticks = itertools.count()
        clock.simulate(lambda: LAGOS_NOON + timedelta(seconds=next(ticks)))
        db.session.rollback()
        current_app.config["TRANSFER_DAILY_LIMIT_KOBO"] = current_app.config[
            "UNVERIFIED_DAILY_LIMIT_KOBO"] = TRANSFER_LIMIT_KOBO

    def teardown(self):
        clock.simulate(None)

    def user(self) -> User:
        return db.session.get(User, self.user_id)

    def _transfer(self, sender_id: int, recipient_id: int, amount_kobo: int, key: str):
        """Send and check the outcome against the model; True when it moved."""
        balances = {self.user_id: self.balance_kobo, self.friend_id: self.friend_balance_kobo}
        sender, recipient = db.session.get(User, sender_id), db.session.get(User, recipient_id)
        try:
            sent = transfers.send(sender, recipient, amount_kobo, "stateful", key)
        except limits.DailyLimitExceeded:
            assert self.sent_today[sender_id] + amount_kobo > TRANSFER_LIMIT_KOBO
            return None
        except ledger.InsufficientFunds:
            assert amount_kobo > balances[sender_id]
            assert self.sent_today[sender_id] + amount_kobo <= TRANSFER_LIMIT_KOBO
            return None
        assert sent.created and amount_kobo <= balances[sender_id]
        assert self.sent_today[sender_id] + amount_kobo <= TRANSFER_LIMIT_KOBO
        self.sent_today[sender_id] += amount_kobo
        delta = amount_kobo if sender_id == self.user_id else -amount_kobo
        self.balance_kobo -= delta
        self.friend_balance_kobo += delta
        return sent.transfer.id

    @rule(amount_kobo=AMOUNTS_KOBO)
    def transfer_to_friend(self, amount_kobo):
        key = secrets.token_urlsafe(16)
        transfer_id = self._transfer(self.user_id, self.friend_id, amount_kobo, key)
        if transfer_id is not None:
            self.transfers.append((transfer_id, key, amount_kobo))

    @rule(amount_kobo=AMOUNTS_KOBO)
    def transfer_from_friend(self, amount_kobo):
        seed.fund_wallet(db.session.get(User, self.friend_id), amount_kobo, secrets.token_urlsafe(16))
        self.friend_balance_kobo += amount_kobo
        self._transfer(self.friend_id, self.user_id, amount_kobo, secrets.token_urlsafe(16))

    @precondition(lambda self: self.transfers)
    @rule(index=st.integers(min_value=0, max_value=10**6), same_details=st.booleans())
    def repeat_transfer(self, index, same_details):
        """Resubmitting a transfer form: the same transfer back, or a clear refusal."""
        transfer_id, key, amount_kobo = self.transfers[index % len(self.transfers)]
        try:
            sent = transfers.send(self.user(), db.session.get(User, self.friend_id),
                                  amount_kobo + (0 if same_details else 1), "stateful", key)
        except transfers.IdempotencyConflict:
            assert not same_details
            return
        assert same_details and sent.transfer.id == transfer_id and not sent.created

    def pick(self, status: str, index: int) -> int:
        ids = sorted(pid for pid, s in self.status.items() if s == status)
        return ids[index % len(ids)]

    def has(self, status: str) -> bool:
        return status in self.status.values()

    @rule(amount_kobo=AMOUNTS_KOBO)
    def fund(self, amount_kobo):
        _, created = seed.fund_wallet(self.user(), amount_kobo, secrets.token_urlsafe(16))
        assert created
        self.balance_kobo += amount_kobo

    @rule(amount_kobo=AMOUNTS_KOBO)
    def pay(self, amount_kobo):
        key = secrets.token_urlsafe(16)
        try:
            payment, created = payments.create_payment(
                self.user(), service_id="ikeja-electric", meter_type="prepaid",
                meter_number="1111111111111", phone="08031234567",
                amount_kobo=amount_kobo, idempotency_key=key)
        except ledger.InsufficientFunds:
            assert amount_kobo > self.balance_kobo
            return
        assert created and amount_kobo <= self.balance_kobo
        self.balance_kobo -= amount_kobo
        self.status[payment.id] = PENDING
        self.amount[payment.id] = amount_kobo
        self.keys[payment.id] = key

    @precondition(lambda self: self.status)
    @rule(index=st.integers(min_value=0, max_value=10**6), same_details=st.booleans())
    def repeat_payment(self, index, same_details):
        """Resubmitting a form: the same payment back, or a clear refusal."""
        payment_id = sorted(self.status)[index % len(self.status)]
        amount_kobo = self.amount[payment_id] + (0 if same_details else 1)
        try:
            payment, created = payments.create_payment(
                self.user(), service_id="ikeja-electric", meter_type="prepaid",
                meter_number="1111111111111", phone="08031234567",
                amount_kobo=amount_kobo, idempotency_key=self.keys[payment_id])
        except payments.IdempotencyConflict:
            assert not same_details
            return
        assert same_details and payment.id == payment_id and not created

    @precondition(lambda self: self.has(PENDING))
    @rule(index=st.integers(min_value=0, max_value=10**6))
    def claim(self, index):
        payment_id = self.pick(PENDING, index)
        assert payments.claim(payment_id)
        assert not payments.claim(payment_id)
        self.status[payment_id] = VENDING

    @precondition(lambda self: self.has(VENDING))
    @rule(index=st.integers(min_value=0, max_value=10**6), succeeded=st.booleans())
    def finish(self, index, succeeded):
        payment_id = self.pick(VENDING, index)
        outcome = SUCCESSFUL if succeeded else FAILED
        assert payments.transition(payment_id, VENDING, outcome, code="TEST")
        db.session.commit()
        self.status[payment_id] = outcome

    @precondition(lambda self: self.has(FAILED))
    @rule(index=st.integers(min_value=0, max_value=10**6))
    def reverse(self, index):
        payment_id = self.pick(FAILED, index)
        assert payments.reverse_payment(payment_id)
        assert not payments.reverse_payment(payment_id)
        self.status[payment_id] = REVERSED
        self.balance_kobo += self.amount[payment_id]

    @precondition(lambda self: self.has(SUCCESSFUL) or self.has(PENDING))
    @rule()
    def reverse_refused_unless_failed(self):
        """Only a failed payment can be refunded."""
        for payment_id, status in self.status.items():
            if status in (SUCCESSFUL, PENDING):
                assert not payments.reverse_payment(payment_id)

    @rule(amount_kobo=AMOUNTS_KOBO, direction=st.sampled_from(["credit", "debit", "bonus"]),
          self_approval_first=st.booleans())
    def adjust(self, amount_kobo, direction, self_approval_first):
        """An admin proposes, a second approves: posted once; the proposer is refused; a
        debit the wallet cannot cover is refused and moves nothing."""
        proposer, approver = self.admin_ids
        proposed = adjustments.propose(proposer, self.email, direction, amount_kobo, "stateful")
        assert proposed.ok, proposed.message
        if self_approval_first:
            assert not adjustments.approve(proposer, proposed.adjustment_id, "my own").ok
        outcome = adjustments.approve(approver, proposed.adjustment_id, "second pair of eyes")
        if direction == "debit" and amount_kobo > self.balance_kobo:
            assert not outcome.ok and "below zero" in outcome.message
            return
        assert outcome.ok, outcome.message
        assert not adjustments.approve(approver, proposed.adjustment_id, "again").ok
        self.balance_kobo += -amount_kobo if direction == "debit" else amount_kobo

    @invariant()
    def books_balance(self):
        db.session.expire_all()
        assert ledger_invariants.check_invariants() == []
        balance = db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.user_id == self.user_id))
        assert balance == self.balance_kobo
        friend = db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.user_id == self.friend_id))
        assert friend == self.friend_balance_kobo
        statuses = dict(db.session.execute(sa.select(Payment.id, Payment.status)).all())
        assert statuses == self.status


def test_money_state_machine(app):
    run_state_machine_as_test(MoneyMachine, settings=settings(
        max_examples=15, stateful_step_count=20, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))
