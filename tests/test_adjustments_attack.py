"""Attacks on admin adjustments (issue 27): what a rogue admin, a colluding pair or a
payments auditor would try, each with the defence that must hold."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from billvend.accounts.models import AdminAction
from billvend.adjustments import services as adjustments
from billvend.adjustments.models import APPROVED, PROPOSED, REJECTED, Adjustment
from billvend.ledger import services as ledger
from billvend.ledger.models import ADJUSTMENTS_WALLET, KIND_BILL_PAYMENT, Transfer
from billvend.platform.extensions import db
from tests.conftest import enrol_totp
from tests.helpers import assert_books_balance, wallet_balance
from tests.test_adjustments import (  # noqa: F401 - fixtures
    adjustment, approver, customer, decide, make_admin, propose, proposed_id, proposer,
)


def _count(model) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.mark.parametrize("reason", ["goodwill\x00credit", "goodwill \x1b[31mcredit",
                                    "refund \u202e00.005 N\u202c ok", "credit \u2066hidden\u2069 ok"])
def test_a_proposal_reason_with_control_or_bidi_characters_is_refused(app, proposer, customer, reason):
    a_client, _ = proposer
    response = propose(a_client, reason=reason)
    assert response.status_code == 422
    assert "letters, numbers, spaces and punctuation" in response.get_data(as_text=True)
    assert _count(Adjustment) == 0


@pytest.mark.parametrize("reason", ["checked\x00with support", "ok \u202eevorppa\u202c"])
def test_a_decision_reason_with_control_or_bidi_characters_is_refused(app, proposer, approver, customer,
                                                                      reason):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client))
    response = decide(b_client, b_user, adj_id, reason=reason)
    assert response.status_code == 422
    assert "letters, numbers, spaces and punctuation" in response.get_data(as_text=True)
    assert adjustment(adj_id).status == PROPOSED
    assert wallet_balance(customer.wallet.id) == 10_000_00


def test_a_reason_on_several_lines_is_still_accepted(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client, reason="failed purchase\r\nticket 1234\tgoodwill"))
    assert decide(b_client, b_user, adj_id, reason="checked\r\nwith support").status_code == 303
    assert adjustment(adj_id).status == APPROVED


def test_html_in_a_reason_is_shown_as_text(app, proposer, approver, customer):
    (a_client, _), (b_client, _) = proposer, approver
    adj_id = proposed_id(propose(a_client, reason="<script>alert(1)</script> goodwill"))
    for page in (b_client.get(f"/admin/adjustments/{adj_id}"), b_client.get("/admin/adjustments"),
                 b_client.get("/admin/actions")):
        text = page.get_data(as_text=True)
        assert "<script>alert(1)</script>" not in text


def test_a_crafted_approval_of_a_rejected_proposal_moves_nothing(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client))
    assert decide(b_client, b_user, adj_id, action="reject").status_code == 303
    assert adjustment(adj_id).status == REJECTED
    enrol_totp(b_user)  # a code of an unused step (each step approves once)
    response = decide(b_client, b_user, adj_id)
    assert response.status_code == 303
    assert adjustment(adj_id).status == REJECTED
    assert wallet_balance(customer.wallet.id) == 10_000_00
    db.session.expire_all()
    last = db.session.scalars(sa.select(AdminAction).where(AdminAction.adjustment_id == adj_id)
                              .order_by(AdminAction.id.desc())).first()
    assert (last.action, last.admin_id) == (adjustments.APPROVE, b_user.id)
    assert last.result.startswith("refused: it is already rejected")


def _race(app, *calls):
    barrier = threading.Barrier(len(calls))
    results, errors = [None] * len(calls), []

    def run(i, fn):
        with app.app_context():
            try:
                barrier.wait(10)
                results[i] = fn()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


@pytest.mark.parametrize("round_", range(3))
def test_approve_racing_reject_decides_once(app, proposer, approver, customer, round_):
    (_, a_user), (_, b_user) = proposer, approver
    third_id = make_admin("dayo.admin@example.com").id
    b_id, wallet_id = b_user.id, customer.wallet.id
    adj_id = adjustments.propose(a_user.id, "chidi@example.com", "credit", 123_45, "goodwill").adjustment_id
    db.session.remove()
    approved, rejected = _race(app, lambda: adjustments.approve(b_id, adj_id, "yes"),
                               lambda: adjustments.reject(third_id, adj_id, "no"))
    assert approved.ok != rejected.ok
    row = adjustment(adj_id)
    postings = db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)
                                 .where(Transfer.adjustment_id == adj_id))
    if approved.ok:
        assert (row.status, postings, wallet_balance(wallet_id)) == (APPROVED, 1, 10_123_45)
    else:
        assert (row.status, postings, wallet_balance(wallet_id)) == (REJECTED, 0, 10_000_00)
    assert_books_balance()


def test_a_debit_racing_a_payment_never_takes_the_wallet_below_zero(app, proposer, approver, customer):
    """The customer holds N10,000; a debit of N6,000 and a payment of N6,000 race: only
    one can pass, whichever it is, and the wallet never goes negative."""
    (_, a_user), (_, b_user) = proposer, approver
    b_id, wallet_id = b_user.id, customer.wallet.id
    adj_id = adjustments.propose(a_user.id, "chidi@example.com", "debit", 6_000_00, "double funding").adjustment_id
    clearing = ledger.system_wallet_id("biller_clearing")
    db.session.remove()

    def pay():
        try:
            ledger.unit_of_work(lambda: ledger.post_transfer(
                kind=KIND_BILL_PAYMENT, debit_wallet_id=wallet_id, credit_wallet_id=clearing,
                amount_kobo=6_000_00))()
            return True
        except ledger.InsufficientFunds:
            return False

    debited, paid = _race(app, lambda: adjustments.approve(b_id, adj_id, "yes"), pay)
    assert debited.ok != paid
    assert wallet_balance(wallet_id) == 4_000_00
    assert adjustment(adj_id).status == (APPROVED if debited.ok else PROPOSED)
    assert wallet_balance(ledger.system_wallet_id(ADJUSTMENTS_WALLET)) == (6_000_00 if debited.ok else 0)


def test_a_customer_email_with_bidi_controls_never_reaches_the_audit_log(app, proposer, customer):
    a_client, _ = proposer
    response = propose(a_client, email="\u202emoc.elpmaxe@idihc")
    assert response.status_code == 422
    assert "control characters" in response.get_data(as_text=True)
    db.session.expire_all()
    assert not db.session.scalars(sa.select(AdminAction.reason)).all()


def _violations(*names):
    from billvend.ledger import invariants as ledger_invariants

    db.session.expire_all()
    return {(v.invariant, v.subject, v.subject_id) for v in ledger_invariants.check_invariants()
            if v.invariant in names}


def test_an_approved_adjustment_whose_transfer_was_deleted_is_reported(app, proposer, approver, customer):
    (_, a_user), (_, b_user) = proposer, approver
    adj_id = adjustments.propose(a_user.id, "chidi@example.com", "credit", 250_00, "goodwill").adjustment_id
    assert adjustments.approve(b_user.id, adj_id, "ok").ok
    transfer_id = adjustment(adj_id).transfer_id
    db.session.remove()
    with db.engine.begin() as conn:  # someone with database access removes the posting
        conn.execute(sa.text("DELETE FROM ledger_entries WHERE transfer_id = :t"), {"t": transfer_id})
        conn.execute(sa.text("DELETE FROM transfers WHERE id = :t"), {"t": transfer_id})
    found = _violations("adjustment_approved", "balance_matches")
    assert ("adjustment_approved", "adjustment", adj_id) in found
    # The balances still say the money moved; their entries no longer do.
    assert ("balance_matches", "wallet", ledger.system_wallet_id(ADJUSTMENTS_WALLET)) in found


def test_a_bonus_inserted_in_sql_beside_an_approved_credit_is_reported(app, proposer, approver, customer):
    """UNIQUE(adjustment_id, kind) lets a second posting of another kind in: the
    invariants must catch it."""
    (_, a_user), (_, b_user) = proposer, approver
    adj_id = adjustments.propose(a_user.id, "chidi@example.com", "credit", 250_00, "goodwill").adjustment_id
    assert adjustments.approve(b_user.id, adj_id, "ok").ok
    promotions, wallet_id = ledger.system_wallet_id("promotions"), customer.wallet.id
    posted = ledger.unit_of_work(lambda: ledger.post_transfer(
        kind="bonus", debit_wallet_id=promotions, credit_wallet_id=wallet_id, amount_kobo=250_00,
        adjustment_id=adj_id))()
    found = _violations("adjustment_approved", "promotions_wallet_reconciles", "unexplained_movement")
    assert {("adjustment_approved", "transfer", posted.transfer_id), ("adjustment_approved", "adjustment", adj_id),
            ("promotions_wallet_reconciles", "wallet", promotions),
            ("unexplained_movement", "transfer", posted.transfer_id)} <= found


def test_a_rejected_and_an_expired_proposal_leave_the_system_wallets_reconciled(app, proposer, approver,
                                                                                customer):
    (_, a_user), (_, b_user) = proposer, approver
    rejected = adjustments.propose(a_user.id, "chidi@example.com", "bonus", 100_00, "x").adjustment_id
    assert adjustments.reject(b_user.id, rejected, "no").ok
    late = adjustments.propose(a_user.id, "chidi@example.com", "debit", 100_00, "x").adjustment_id
    with db.engine.begin() as conn:
        conn.execute(sa.update(Adjustment.__table__).where(Adjustment.id == late)
                     .values(expires_at=Adjustment.proposed_at))
    assert "expired" in adjustments.approve(b_user.id, late, "late").message
    assert adjustment(late).status == "expired"
    assert_books_balance()


def test_a_proposal_already_named_by_a_forged_posting_is_refused_not_a_crash(app, proposer, approver,
                                                                             customer):
    """Someone with database access posted a transfer naming a pending proposal: the
    approval cannot post its own (UNIQUE), and says so on the record instead of failing."""
    (_, a_user), (b_client, b_user) = proposer, approver
    adj_id = adjustments.propose(a_user.id, "chidi@example.com", "credit", 100_00, "goodwill").adjustment_id
    system, wallet_id = ledger.system_wallet_id(ADJUSTMENTS_WALLET), customer.wallet.id
    ledger.unit_of_work(lambda: ledger.post_transfer(
        kind="adjustment", debit_wallet_id=system, credit_wallet_id=wallet_id, amount_kobo=100_00,
        adjustment_id=adj_id))()
    response = decide(b_client, b_user, adj_id)
    assert response.status_code == 303
    row = adjustment(adj_id)
    assert row.status == PROPOSED
    assert wallet_balance(wallet_id) == 10_100_00  # the forged one only
    db.session.expire_all()
    last = db.session.scalars(sa.select(AdminAction).where(AdminAction.adjustment_id == adj_id)
                              .order_by(AdminAction.id.desc())).first()
    assert (last.action, last.result.split(":")[0]) == (adjustments.APPROVE, "refused")
    assert "already names it" in last.result
