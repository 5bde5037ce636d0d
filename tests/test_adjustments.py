"""Admin adjustments and bonuses with four-eyes approval (issue 27): propose, approve by
another admin with a fresh TOTP code, reject, every refusal, expiry, exactly-once
posting, the customer's history and message, the audit trail, and the invariants that
catch a forged adjustment."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.accounts.models import AdminAction, User
from billvend.adjustments import services as adjustments
from billvend.adjustments.models import APPROVED, EXPIRED, PROPOSED, REJECTED, Adjustment
from billvend.ledger import invariants as ledger_invariants
from billvend.ledger import services as ledger
from billvend.ledger.models import (
    ADJUSTMENTS_WALLET, KIND_ADJUSTMENT, KIND_BONUS, PROMOTIONS_WALLET, Transfer, Wallet,
)
from billvend.notifications.models import Message
from billvend.platform.extensions import db
from tests.conftest import CSRF_RE, Auth, FreshSessionClient, enrol_totp, totp_code
from tests.helpers import assert_books_balance, make_user, wallet_balance

PASSWORD = "correct horse 1"


def make_admin(email: str) -> User:
    user = make_user(email)
    user.is_admin = True
    db.session.commit()
    return user


def signed_in_admin(app, email: str):
    """(client, admin) of an admin signed in with the second factor, in a client of its own."""
    app.test_client_class = FreshSessionClient
    client = app.test_client()
    user = make_admin(email)
    auth = Auth(client)
    assert auth.login(email, PASSWORD).status_code == 303
    auth.second_factor(user)
    return client, user


@pytest.fixture
def proposer(app):
    return signed_in_admin(app, "ada.admin@example.com")


@pytest.fixture
def approver(app):
    return signed_in_admin(app, "bola.admin@example.com")


@pytest.fixture
def customer():
    return make_user("chidi@example.com", balance_kobo=10_000_00)


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def propose(client, email="chidi@example.com", direction="credit", amount="500", reason="failed purchase goodwill",
            **extra):
    data = {"csrf_token": csrf_of(client, "/admin/adjustments"), "email": email,
            "direction": direction, "amount": amount, "reason": reason} | extra
    return client.post("/admin/adjustments", data=data)


def fresh_code(user: User) -> str:
    """A code for ``user`` whose time step has not been used yet."""
    db.session.expire_all()
    fresh = db.session.get(User, user.id)
    return totp_code(fresh.totp_secret, fresh.totp_last_step)


def decide(client, user, adjustment_id: int, action="approve", code=None, reason="checked with support",
           **extra):
    path = f"/admin/adjustments/{adjustment_id}"
    data = {"csrf_token": csrf_of(client, path), f"{action}-code": fresh_code(user) if code is None else code,
            f"{action}-reason": reason} | extra
    return client.post(f"{path}/{action}", data=data)


def proposed_id(response) -> int:
    assert response.status_code == 303, response.get_data(as_text=True)[:3000]
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def adjustment(adjustment_id: int) -> Adjustment:
    db.session.expire_all()
    return db.session.get(Adjustment, adjustment_id)


def audit(adjustment_id=None) -> list[tuple[str, str]]:
    db.session.expire_all()
    query = sa.select(AdminAction.action, AdminAction.result).order_by(AdminAction.id)
    if adjustment_id is not None:
        query = query.where(AdminAction.adjustment_id == adjustment_id)
    return [(a, r.split(":")[0]) for a, r in db.session.execute(query)]


def system_balance(code: str) -> int:
    return wallet_balance(ledger.system_wallet_id(code))


# --- The flows --------------------------------------------------------------------------


def test_a_credit_proposed_then_approved_by_another_admin_is_posted_once(app, proposer, approver, customer):
    (a_client, a_user), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client, amount="1,500.50"))
    row = adjustment(adj_id)
    assert (row.status, row.amount_kobo, row.direction, row.proposed_by_id) == (PROPOSED, 1_500_50, "credit",
                                                                                a_user.id)
    assert row.expires_at - row.proposed_at == timedelta(hours=24)
    assert wallet_balance(customer.wallet.id) == 10_000_00  # a proposal moves nothing
    assert_books_balance()

    response = decide(b_client, b_user, adj_id)
    assert response.status_code == 303
    row = adjustment(adj_id)
    assert (row.status, row.decided_by_id) == (APPROVED, b_user.id)
    transfer = db.session.get(Transfer, row.transfer_id)
    assert (transfer.kind, transfer.adjustment_id, transfer.amount_kobo) == (KIND_ADJUSTMENT, adj_id, 1_500_50)
    assert transfer.debit_wallet_id == ledger.system_wallet_id(ADJUSTMENTS_WALLET)
    assert transfer.credit_wallet_id == customer.wallet.id
    assert wallet_balance(customer.wallet.id) == 11_500_50
    assert system_balance(ADJUSTMENTS_WALLET) == -1_500_50
    assert audit(adj_id) == [("adjustment_propose", "done"), ("adjustment_approve", "done")]
    assert_books_balance()
    # The page says so, and no form is left to decide it again.
    page = b_client.get(f"/admin/adjustments/{adj_id}").get_data(as_text=True)
    assert "approved" in page and f"/admin/adjustments/{adj_id}/approve" not in page
    page = b_client.get(f"/admin/transfers/{row.transfer_id}").get_data(as_text=True)
    assert f'href="/admin/adjustments/{adj_id}"' in page


def test_a_bonus_comes_from_promotions_and_tells_the_customer(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client, direction="bonus", amount="250"))
    assert decide(b_client, b_user, adj_id).status_code == 303
    row = adjustment(adj_id)
    transfer = db.session.get(Transfer, row.transfer_id)
    assert (transfer.kind, transfer.debit_wallet_id) == (KIND_BONUS, ledger.system_wallet_id(PROMOTIONS_WALLET))
    assert system_balance(PROMOTIONS_WALLET) == -250_00
    assert wallet_balance(customer.wallet.id) == 10_250_00
    messages = db.session.scalars(sa.select(Message).where(Message.event_key == f"adjustment:{adj_id}:credited")).all()
    assert [(m.channel, m.recipient, m.template) for m in messages] == [
        ("email", "chidi@example.com", "goodwill_credit")]
    from billvend.notifications.services import render

    text = render(messages[0])
    assert text.subject == "Goodwill credit from billvend: ₦250.00"
    assert "₦10,250.00" in text.text and "₦250.00" in text.html and "https://" not in text.sms
    assert_books_balance()


def test_the_customer_sees_plain_words_in_their_history(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    credit_id = proposed_id(propose(a_client, direction="bonus", amount="100"))
    assert decide(b_client, b_user, credit_id).status_code == 303
    debit_id = proposed_id(propose(a_client, direction="debit", amount="40", reason="double credit last week"))
    # The approver's next decision needs the next time step: let them reuse none.
    enrol_totp(b_user)
    assert decide(b_client, b_user, debit_id).status_code == 303
    client = app.test_client()
    assert Auth(client).login("chidi@example.com", PASSWORD).status_code == 303
    page = client.get("/history").get_data(as_text=True)
    assert "Goodwill credit from billvend" in page
    assert "Balance correction by billvend" in page
    assert "double credit last week" not in page  # the admins' reason stays theirs
    csv_text = client.get("/history/statement.csv").get_data(as_text=True)
    assert "Goodwill credit from billvend" in csv_text and "Balance correction by billvend" in csv_text
    assert wallet_balance(customer.wallet.id) == 10_060_00
    keys = set(db.session.scalars(sa.select(Message.event_key)))
    assert f"adjustment:{credit_id}:credited" in keys and f"adjustment:{debit_id}:credited" not in keys
    assert_books_balance()


def test_a_rejection_moves_nothing(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client))
    assert decide(b_client, b_user, adj_id, action="reject", reason="no failed purchase found").status_code == 303
    row = adjustment(adj_id)
    assert (row.status, row.decided_by_id, row.transfer_id) == (REJECTED, b_user.id, None)
    assert wallet_balance(customer.wallet.id) == 10_000_00
    assert audit(adj_id) == [("adjustment_propose", "done"), ("adjustment_reject", "done")]
    # A rejected one cannot be approved after all.
    enrol_totp(b_user)
    decide(b_client, b_user, adj_id)
    assert adjustment(adj_id).status == REJECTED
    assert audit(adj_id)[-1] == ("adjustment_approve", "refused")
    assert_books_balance()


# --- Refusals ---------------------------------------------------------------------------


def test_the_proposer_cannot_approve_or_reject_their_own(app, proposer, customer):
    a_client, a_user = proposer
    adj_id = proposed_id(propose(a_client))
    page = a_client.get(f"/admin/adjustments/{adj_id}").get_data(as_text=True)
    assert "a different admin must approve or reject it" in page
    response = decide(a_client, a_user, adj_id)
    assert response.status_code == 303
    flashed = a_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "you proposed it: a different admin must approve or reject it" in flashed
    enrol_totp(a_user)
    decide(a_client, a_user, adj_id, action="reject")
    assert adjustment(adj_id).status == PROPOSED
    assert wallet_balance(customer.wallet.id) == 10_000_00
    assert audit(adj_id) == [("adjustment_propose", "done"), ("adjustment_approve", "refused"),
                             ("adjustment_reject", "refused")]
    # And the service refuses it whatever calls it.
    assert not adjustments.approve(a_user.id, adj_id, "me again").ok


def test_the_database_refuses_a_decision_by_the_proposer(app, proposer, customer):
    _, a_user = proposer
    outcome = adjustments.propose(a_user.id, "chidi@example.com", "credit", 100, "test")
    with pytest.raises(sa.exc.IntegrityError):
        with db.engine.begin() as conn:
            conn.execute(sa.update(Adjustment.__table__).where(Adjustment.id == outcome.adjustment_id)
                         .values(status=REJECTED, decided_by_id=a_user.id))


@pytest.mark.parametrize("code", ["000000", "12345", "", "abcdef", "aaaaa-bbbbb"])
def test_a_wrong_or_missing_code_is_refused(app, proposer, approver, customer, code):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client))
    response = decide(b_client, b_user, adj_id, code=code)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "6-digit code" in page or "That code is not right" in page
    assert adjustment(adj_id).status == PROPOSED
    assert wallet_balance(customer.wallet.id) == 10_000_00
    if code == "000000":  # a well-formed wrong code is on the record
        assert audit(adj_id)[-1] == ("adjustment_approve", "refused")


def test_a_used_code_does_not_approve_twice(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    first = proposed_id(propose(a_client))
    second = proposed_id(propose(a_client, amount="700"))
    code = fresh_code(b_user)
    assert decide(b_client, b_user, first, code=code).status_code == 303
    assert decide(b_client, b_user, second, code=code).status_code == 422
    assert (adjustment(first).status, adjustment(second).status) == (APPROVED, PROPOSED)


def test_a_proposal_expires_after_24_hours(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client))
    with db.engine.begin() as conn:  # 24 h and a second ago, on the database's own terms
        row = conn.execute(sa.select(Adjustment.proposed_at, Adjustment.expires_at)
                           .where(Adjustment.id == adj_id)).one()
        shift = timedelta(hours=24, seconds=1)
        conn.execute(sa.update(Adjustment.__table__).where(Adjustment.id == adj_id)
                     .values(proposed_at=row.proposed_at - shift, expires_at=row.expires_at - shift))
    listing = b_client.get("/admin/adjustments?status=expired").get_data(as_text=True)
    assert 'data-status="expired"' in listing
    assert 'data-status="expired"' not in b_client.get("/admin/adjustments?status=pending").get_data(as_text=True)
    response = decide(b_client, b_user, adj_id)
    flashed = b_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "the proposal expired" in flashed
    assert adjustment(adj_id).status == EXPIRED
    assert wallet_balance(customer.wallet.id) == 10_000_00
    assert audit(adj_id)[-1] == ("adjustment_approve", "refused")
    assert_books_balance()


def test_a_debit_that_would_take_the_wallet_below_zero_is_refused_at_approval(app, proposer, approver,
                                                                              customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client, direction="debit", amount="10000.01"))
    response = decide(b_client, b_user, adj_id)
    flashed = b_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "would take the wallet below zero" in flashed
    assert adjustment(adj_id).status == PROPOSED
    assert wallet_balance(customer.wallet.id) == 10_000_00
    assert system_balance(ADJUSTMENTS_WALLET) == 0
    # The whole balance can be corrected away, and no more.
    exact = proposed_id(propose(a_client, direction="debit", amount="10000"))
    enrol_totp(b_user)
    decide(b_client, b_user, exact)
    assert adjustment(exact).status == APPROVED
    assert wallet_balance(customer.wallet.id) == 0
    assert system_balance(ADJUSTMENTS_WALLET) == 10_000_00
    assert_books_balance()


@pytest.mark.parametrize("amount,message", [
    ("0", "greater than zero"), ("-5", "positive"), ("1.005", "two decimal places"),
    ("1000000.01", "The largest amount"), ("99999999999999999", "like 1500"), ("", "Enter an amount"),
    ("abc", "like 1500"),
])
def test_bad_amounts_change_nothing(app, proposer, customer, amount, message):
    a_client, _ = proposer
    response = propose(a_client, amount=amount)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Adjustment)) == 0


def test_a_reason_and_a_known_customer_are_required(app, proposer, customer):
    a_client, a_user = proposer
    response = propose(a_client, reason="")
    assert response.status_code == 422 and "Give a reason" in response.get_data(as_text=True)
    response = propose(a_client, email="nobody@example.com")
    assert response.status_code == 422 and "no customer has that email address" in response.get_data(as_text=True)
    response = propose(a_client, email=a_user.email)
    assert response.status_code == 422 and "your own wallet" in response.get_data(as_text=True)
    response = propose(a_client, direction="gift")
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Adjustment)) == 0
    assert audit() == [("adjustment_propose", "refused"), ("adjustment_propose", "refused")]


def test_missing_csrf_is_refused(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    response = a_client.post("/admin/adjustments", data={"email": "chidi@example.com", "direction": "credit",
                                                         "amount": "500", "reason": "no token here"})
    assert response.status_code == 400
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Adjustment)) == 0
    adj_id = proposed_id(propose(a_client))
    response = b_client.post(f"/admin/adjustments/{adj_id}/approve",
                             data={"approve-code": fresh_code(b_user), "approve-reason": "no token here"})
    assert response.status_code == 400
    assert adjustment(adj_id).status == PROPOSED


def test_customers_and_visitors_cannot_reach_it(app, customer):
    client = app.test_client()
    response = client.get("/admin/adjustments")
    assert response.status_code in (302, 303) and "/login" in response.headers["Location"]
    assert Auth(client).login("chidi@example.com", PASSWORD).status_code == 303
    assert client.get("/admin/adjustments").status_code == 404
    token = csrf_of(client, "/")
    response = client.post("/admin/adjustments", data={"csrf_token": token, "email": "chidi@example.com",
                                                       "direction": "credit", "amount": "500",
                                                       "reason": "give me money"})
    assert response.status_code == 404
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Adjustment)) == 0


def test_every_step_is_on_the_audit_page(app, proposer, approver, customer):
    (a_client, _), (b_client, b_user) = proposer, approver
    adj_id = proposed_id(propose(a_client))
    decide(b_client, b_user, adj_id, code="000000")
    decide(b_client, b_user, adj_id)
    page = b_client.get("/admin/actions").get_data(as_text=True)
    assert page.count(f'href="/admin/adjustments/{adj_id}"') == 3
    for words in ("Adjustment proposed", "Adjustment approval", "wrong or already used authenticator code",
                  "done: posted the credit"):
        assert words in page
    listing = b_client.get("/admin/adjustments?status=approved&direction=credit&email=chidi@example.com")
    assert 'data-testid="adjustment-row"' in listing.get_data(as_text=True)


# --- Exactly once -----------------------------------------------------------------------


def test_a_second_approval_posts_nothing(app, proposer, approver, customer):
    (_, a_user), (_, b_user) = proposer, approver
    third = make_admin("dayo.admin@example.com")
    adj_id = adjustments.propose(a_user.id, "chidi@example.com", "credit", 300_00, "goodwill").adjustment_id
    assert adjustments.approve(b_user.id, adj_id, "ok").ok
    again = adjustments.approve(third.id, adj_id, "ok too")
    assert not again.ok and "already approved" in again.message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)
                             .where(Transfer.adjustment_id == adj_id)) == 1
    assert wallet_balance(customer.wallet.id) == 10_300_00
    # The database itself refuses a second posting of one adjustment.
    with pytest.raises(sa.exc.IntegrityError):
        ledger.unit_of_work(lambda: ledger.post_transfer(
            kind=KIND_ADJUSTMENT, debit_wallet_id=ledger.system_wallet_id(ADJUSTMENTS_WALLET),
            credit_wallet_id=customer.wallet.id, amount_kobo=300_00, adjustment_id=adj_id))()
    assert wallet_balance(customer.wallet.id) == 10_300_00
    assert_books_balance()


def test_two_admins_approving_at_once_post_it_once(app, proposer, approver, customer):
    """Two threads (two web processes) approve the same proposal at the same moment:
    the row lock (PostgreSQL) or the serial writer (SQLite), the status guard and
    UNIQUE(adjustment_id, kind) let exactly one post it."""
    (_, a_user), (_, b_user) = proposer, approver
    third_id = make_admin("dayo.admin@example.com").id
    b_id, wallet_id = b_user.id, customer.wallet.id
    adj_id = adjustments.propose(a_user.id, "chidi@example.com", "credit", 123_45, "goodwill").adjustment_id
    db.session.remove()
    barrier = threading.Barrier(2)
    outcomes, errors = [], []

    def approve(admin_id):
        with app.app_context():
            try:
                barrier.wait(10)
                outcomes.append(adjustments.approve(admin_id, adj_id, "at once"))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=approve, args=(admin_id,)) for admin_id in (b_id, third_id)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert sorted(o.ok for o in outcomes) == [False, True]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Transfer)
                             .where(Transfer.adjustment_id == adj_id)) == 1
    assert wallet_balance(wallet_id) == 10_123_45
    assert_books_balance()


# --- Invariants catch forgeries ---------------------------------------------------------


def _found(*names):
    return {(v.invariant, v.subject, v.subject_id) for v in ledger_invariants.check_invariants()
            if v.invariant in names}


def test_a_forged_adjustment_transfer_is_reported(app, customer):
    forged = ledger.unit_of_work(lambda: ledger.post_transfer(
        kind=KIND_ADJUSTMENT, debit_wallet_id=ledger.system_wallet_id(ADJUSTMENTS_WALLET),
        credit_wallet_id=customer.wallet.id, amount_kobo=5_000_00))()
    assert _found("adjustment_approved", "unexplained_movement", "adjustments_wallet_reconciles") == {
        ("adjustment_approved", "transfer", forged.transfer_id),
        ("unexplained_movement", "transfer", forged.transfer_id),
        ("adjustments_wallet_reconciles", "wallet", ledger.system_wallet_id(ADJUSTMENTS_WALLET))}
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code != 0 and "adjustment_approved" in result.output and "FAIL" in result.output


def test_a_bonus_naming_a_rejected_proposal_or_the_wrong_wallet_is_reported(app, proposer, approver, customer):
    (_, a_user), (_, b_user) = proposer, approver
    other = make_user("ebere@example.com")
    rejected = adjustments.propose(a_user.id, "chidi@example.com", "bonus", 100_00, "x").adjustment_id
    assert adjustments.reject(b_user.id, rejected, "no").ok
    approved = adjustments.propose(a_user.id, "chidi@example.com", "bonus", 100_00, "x").adjustment_id
    assert adjustments.approve(b_user.id, approved, "ok").ok
    promotions = ledger.system_wallet_id(PROMOTIONS_WALLET)
    on_rejected = ledger.unit_of_work(lambda: ledger.post_transfer(
        kind=KIND_BONUS, debit_wallet_id=promotions, credit_wallet_id=customer.wallet.id,
        amount_kobo=100_00, adjustment_id=rejected))()
    # The approved one's amount paid again, into another customer's wallet, as an adjustment.
    elsewhere = ledger.unit_of_work(lambda: ledger.post_transfer(
        kind=KIND_ADJUSTMENT, debit_wallet_id=promotions, credit_wallet_id=other.wallet.id,
        amount_kobo=100_00, adjustment_id=approved))()
    found = _found("adjustment_approved", "unexplained_movement")
    assert {("adjustment_approved", "transfer", on_rejected.transfer_id),
            ("adjustment_approved", "transfer", elsewhere.transfer_id),
            ("adjustment_approved", "adjustment", rejected),
            ("adjustment_approved", "adjustment", approved),
            ("unexplained_movement", "transfer", on_rejected.transfer_id),
            ("unexplained_movement", "transfer", elsewhere.transfer_id)} == found
    client = signed_in_admin(app, "dayo.admin@example.com")[0]
    page = client.get("/admin/invariants").get_data(as_text=True)
    assert f'href="/admin/adjustments/{rejected}"' in page
    assert f'href="/admin/transfers/{elsewhere.transfer_id}"' in page


def test_the_invariants_page_lists_the_new_rules(app, approver, customer):
    b_client, _ = approver
    page = b_client.get("/admin/invariants").get_data(as_text=True)
    for name in ("adjustment_approved", "adjustments_wallet_reconciles", "promotions_wallet_reconciles"):
        assert name in page
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 0, result.output
    assert "ok   adjustment_approved:" in result.output


def test_system_wallets_may_go_negative_but_are_reconciled(app, proposer, approver, customer):
    (_, a_user), (_, b_user) = proposer, approver
    for direction, kobo in (("credit", 700_00), ("debit", 200_00), ("bonus", 50_00)):
        adj_id = adjustments.propose(a_user.id, "chidi@example.com", direction, kobo, "r").adjustment_id
        assert adjustments.approve(b_user.id, adj_id, "ok").ok
    assert system_balance(ADJUSTMENTS_WALLET) == 200_00 - 700_00
    assert system_balance(PROMOTIONS_WALLET) == -50_00
    assert wallet_balance(customer.wallet.id) == 10_000_00 + 700_00 - 200_00 + 50_00
    assert_books_balance()
    assert db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.system_code == ADJUSTMENTS_WALLET)) < 0
