import pytest
import sqlalchemy as sa

from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.vending import lifecycle as payments
from billvend.platform.extensions import db
from billvend.ledger.models import (
    BILLER_CLEARING_WALLET, FUNDING_WALLET, KIND_ADJUSTMENT, KIND_FUNDING, LedgerEntry, Transfer, Wallet,
)
from billvend.vending.models import FAILED
from billvend.accounts.models import User
from billvend.platform import transactions
from tests.helpers import (
    assert_books_balance, assert_ledger_consistent, in_other_worker, make_payment, make_user, wallet_balance,
)


def balances(*wallet_ids):
    return [db.session.get(Wallet, wid).balance_kobo for wid in wallet_ids]


def test_funding_posts_a_balanced_transfer(app):
    user = make_user(balance_kobo=500_000)
    funding_id = ledger.system_wallet_id(FUNDING_WALLET)
    db.session.expire_all()
    assert balances(user.wallet.id, funding_id) == [500_000, -500_000]
    transfer = db.session.scalar(sa.select(Transfer))
    assert transfer.kind == "funding"
    assert sorted(e.delta_kobo for e in transfer.entries) == [-500_000, 500_000]
    assert user.wallet.version == 1
    assert_books_balance()


def test_pay_and_reverse_keep_invariants(app):
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=200_000)
    clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    assert balances(user.wallet.id, clearing_id) == [300_000, 200_000]
    assert_books_balance()
    assert payments.claim(payment.id)
    payments.transition(payment.id, "vending", FAILED, code="SERVICE_UNAVAILABLE")
    db.session.commit()
    assert payments.reverse_payment(payment.id)
    assert not payments.reverse_payment(payment.id)  # exactly once
    db.session.expire_all()
    assert balances(user.wallet.id, clearing_id) == [500_000, 0]
    statement = db.session.scalars(
        sa.select(LedgerEntry).where(LedgerEntry.wallet_id == user.wallet.id).order_by(LedgerEntry.wallet_version)
    ).all()
    assert [(e.wallet_version, e.delta_kobo, e.balance_after_kobo) for e in statement] == [
        (1, 500_000, 500_000), (2, -200_000, 300_000), (3, 200_000, 500_000)]
    assert_books_balance()


def test_insufficient_funds_changes_nothing(app):
    user = make_user(balance_kobo=50_000)
    clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    with pytest.raises(ledger.InsufficientFunds):
        ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=user.wallet.id,
                             credit_wallet_id=clearing_id, amount_kobo=50_001)
    db.session.rollback()
    db.session.expire_all()
    assert balances(user.wallet.id, clearing_id) == [50_000, 0]
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id))) == 1
    assert_books_balance()


@pytest.mark.parametrize("amount", [0, -1, 1.5, "100", True])
def test_bad_amounts_refused(app, amount):
    user = make_user(balance_kobo=50_000)
    with pytest.raises(ledger.LedgerError):
        ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=user.wallet.id,
                             credit_wallet_id=ledger.system_wallet_id(BILLER_CLEARING_WALLET),
                             amount_kobo=amount)
    db.session.rollback()


def test_user_wallet_cannot_go_negative_even_bypassing_the_ledger(app):
    user = make_user()
    with pytest.raises(sa.exc.IntegrityError):
        db.session.execute(sa.update(Wallet).where(Wallet.id == user.wallet.id).values(balance_kobo=-1))
        db.session.flush()
    db.session.rollback()


def test_check_invariants_reports_tampering(app):
    user = make_user(balance_kobo=100_000)
    make_payment(user, amount_kobo=60_000)
    assert_books_balance()
    entry = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.wallet_id == user.wallet.id,
                                                           LedgerEntry.wallet_version == 2))
    entry.delta_kobo = -50_000
    db.session.commit()
    found = {(v.invariant, v.subject) for v in ledger_invariants.check_invariants()}
    assert ("transfer_balanced", "transfer") in found
    assert ("balance_matches", "wallet") in found


def test_ledger_check_cli(app):
    user = make_user(balance_kobo=100_000)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["ledger", "check"])
    assert result.exit_code == 0, result.output
    db.session.execute(sa.update(Wallet).where(Wallet.id == user.wallet.id).values(balance_kobo=99))
    db.session.commit()
    result = runner.invoke(args=["ledger", "check"])
    assert result.exit_code == 1
    assert "balance_matches" in result.output


@pytest.mark.parametrize("debit_is_lower_id", [True, False])
def test_refused_transfer_writes_nothing(app, debit_is_lower_id):
    """A refusal leaves the transaction clean: committing after it is harmless."""
    first = make_user(balance_kobo=10_000).wallet.id
    second = make_user(balance_kobo=10_000).wallet.id
    debit, credit = (first, second) if debit_is_lower_id else (second, first)
    with pytest.raises(ledger.InsufficientFunds):
        ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=debit, credit_wallet_id=credit,
                             amount_kobo=10_001)
    db.session.commit()
    db.session.expire_all()
    assert balances(first, second) == [10_000, 10_000]
    assert db.session.get(Wallet, first).version == db.session.get(Wallet, second).version == 1
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id))) == 2
    assert_books_balance()


@pytest.mark.parametrize("missing_id", [0, 9999])
@pytest.mark.parametrize("missing", ["debit", "credit"])
def test_unknown_wallet_refused(app, missing, missing_id):
    """Either side missing, and locked before or after the real wallet (so
    the real one may already be changed, and must be put back): refused,
    and committing afterwards leaves no transfer and the wallet untouched."""
    user = make_user(balance_kobo=10_000)
    ids = {"debit": user.wallet.id, "credit": user.wallet.id, missing: missing_id}
    with pytest.raises(ledger.LedgerError, match=f"no wallet {missing_id}"):
        ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=ids["debit"],
                             credit_wallet_id=ids["credit"], amount_kobo=100)
    db.session.commit()
    db.session.expire_all()
    assert balances(user.wallet.id) == [10_000]
    assert db.session.get(Wallet, user.wallet.id).version == 1
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id))) == 1
    assert_books_balance()


def test_second_debit_of_a_payment_is_an_integrity_error_and_moves_nothing(app):
    """UNIQUE(payment_id, kind) surfaces as SQLAlchemy's IntegrityError (the
    PostgreSQL path runs on a DBAPI cursor and must wrap it the same way)."""
    user = make_user(balance_kobo=100_000)
    payment = make_payment(user, amount_kobo=10_000)
    clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    with pytest.raises(sa.exc.IntegrityError):
        ledger.post_transfer(kind="bill_payment", debit_wallet_id=user.wallet.id,
                             credit_wallet_id=clearing_id, amount_kobo=10_000,
                             payment_id=payment.id)
    db.session.rollback()
    if db.engine.dialect.name == "sqlite":
        # SQLite keeps the transaction usable after the error: committing it
        # must not commit a half-posted transfer either.
        with pytest.raises(sa.exc.IntegrityError):
            ledger.post_transfer(kind="bill_payment", debit_wallet_id=user.wallet.id,
                                 credit_wallet_id=clearing_id, amount_kobo=10_000,
                                 payment_id=payment.id)
        db.session.commit()
    db.session.expire_all()
    assert balances(user.wallet.id, clearing_id) == [90_000, 10_000]
    assert_books_balance()


@pytest.mark.postgresql
def test_lost_connection_during_a_transfer_is_wrapped_and_recovers(app):
    """The server ends our backend mid-transaction: the caller sees a
    SQLAlchemy OperationalError with the connection invalidated (a 503 in
    the web layer), and after a rollback the session works on a new one."""
    user = make_user(balance_kobo=10_000)
    # Any other wallet will do; not biller_clearing, which must reconcile
    # with the payments (invariant 6).
    clearing_id = ledger.system_wallet_id(FUNDING_WALLET)
    pid = db.session.scalar(sa.text("SELECT pg_backend_pid()"))
    with db.engine.connect() as other:
        other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(sa.exc.OperationalError) as raised:
        ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=user.wallet.id,
                             credit_wallet_id=clearing_id, amount_kobo=100)
    assert raised.value.connection_invalidated
    assert not ledger.is_transient(raised.value)
    db.session.rollback()
    ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=user.wallet.id,
                         credit_wallet_id=clearing_id, amount_kobo=100)
    db.session.commit()
    db.session.expire_all()
    assert balances(user.wallet.id, clearing_id)[0] == 9_900
    assert_ledger_consistent()  # a bare adjustment: see the helper


def test_check_invariants_reports_an_entry_on_the_wrong_wallet(app):
    user = make_user(balance_kobo=100_000)
    other = make_user(balance_kobo=100_000)
    make_payment(user, amount_kobo=60_000)
    assert_books_balance()
    # Move the debit entry of the payment to another wallet, keeping sums.
    entry = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.wallet_id == user.wallet.id,
                                                           LedgerEntry.wallet_version == 2))
    entry.wallet_id = other.wallet.id
    entry.wallet_version = 99
    db.session.commit()
    found = {(v.invariant, v.subject) for v in ledger_invariants.check_invariants()}
    assert ("transfer_balanced", "transfer") in found


def test_check_invariants_reports_a_version_gap(app):
    user = make_user(balance_kobo=100_000)
    make_payment(user, amount_kobo=60_000)
    db.session.execute(sa.update(LedgerEntry).where(LedgerEntry.wallet_id == user.wallet.id,
                                                    LedgerEntry.wallet_version == 1)
                       .values(wallet_version=7))
    db.session.commit()
    found = {(v.invariant, v.subject, v.subject_id) for v in ledger_invariants.check_invariants()}
    assert ("versions_gapless", "wallet", user.wallet.id) in found


# --- Issue 20, item 8: every transfer kind has a rule -------------------------


def _found(*invariants):
    return {(v.invariant, v.subject, v.subject_id) for v in ledger_invariants.check_invariants()
            if not invariants or v.invariant in invariants}


def test_an_adjustment_from_the_funding_wallet_into_a_user_wallet_is_reported(app):
    """``post_transfer(kind="adjustment", debit=<funding wallet>, credit=<a
    user wallet>)`` gave a user N1,000,000 with no funding behind it, and
    every invariant held: each check looked only at the kinds it knew."""
    user = make_user(balance_kobo=100_000)
    assert ledger_invariants.check_invariants() == []
    funding_wallet_id = ledger.system_wallet_id(FUNDING_WALLET)
    posted = ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=funding_wallet_id,
                                  credit_wallet_id=user.wallet.id, amount_kobo=1_000_000_00)
    db.session.commit()
    found = _found()
    assert ("unexplained_movement", "transfer", posted.transfer_id) in found
    assert ("adjustment_approved", "transfer", posted.transfer_id) in found
    assert ("funding_wallet_reconciles", "wallet", funding_wallet_id) in found
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 1
    assert "FAIL unexplained_movement" in result.output and "FAIL funding_wallet_reconciles" in result.output


def test_an_adjustment_between_two_customers_is_reported(app):
    """Money moved from one customer to another with no payment, funding or
    approval behind it: nothing explains either side."""
    payer, payee = make_user(balance_kobo=50_000), make_user()
    posted = ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=payer.wallet.id,
                                  credit_wallet_id=payee.wallet.id, amount_kobo=10_000)
    db.session.commit()
    assert _found("unexplained_movement", "adjustment_approved") == {
        ("unexplained_movement", "transfer", posted.transfer_id),
        ("adjustment_approved", "transfer", posted.transfer_id)}


def test_a_bill_payment_transfer_with_no_payment_is_reported(app):
    """A ``bill_payment`` transfer linked to no payment escaped the payment
    checks (they start from payments) and moved a customer's money."""
    user = make_user(balance_kobo=50_000)
    posted = ledger.post_transfer(kind="bill_payment", debit_wallet_id=user.wallet.id,
                                  credit_wallet_id=ledger.system_wallet_id(BILLER_CLEARING_WALLET),
                                  amount_kobo=10_000)
    db.session.commit()
    assert ("unexplained_movement", "transfer", posted.transfer_id) in _found()


def test_the_funding_wallet_reconciles_with_credited_fundings(app):
    """The funding wallet mirrors the outside world: minus every credited
    funding. Money taken out of it by any other transfer is reported, even
    between system wallets."""
    make_user(balance_kobo=70_000)
    assert ledger_invariants.check_invariants() == []
    funding_wallet_id = ledger.system_wallet_id(FUNDING_WALLET)
    ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=funding_wallet_id,
                         credit_wallet_id=ledger.system_wallet_id(BILLER_CLEARING_WALLET), amount_kobo=5)
    db.session.commit()
    [violation] = [v for v in ledger_invariants.check_invariants() if v.invariant == "funding_wallet_reconciles"]
    assert violation.subject_id == funding_wallet_id
    assert "-70005" in violation.detail and "70000" in violation.detail


def test_every_transfer_kind_has_a_rule():
    from billvend.ledger.models import TRANSFER_KINDS

    assert set(ledger_invariants.TRANSFER_RULES) == set(TRANSFER_KINDS)
    assert all(rule in ledger_invariants.INVARIANTS for rule in ledger_invariants.TRANSFER_RULES.values())


def test_the_ledger_refuses_a_transfer_larger_than_any_balance_can_hold(app):
    user = make_user("cap@example.com")
    funding_wallet, wallet_id = ledger.system_wallet_id(FUNDING_WALLET), user.wallet.id
    db.session.rollback()
    with pytest.raises(ledger.LedgerError):
        transactions.run(lambda: ledger.post_transfer(
            kind=KIND_FUNDING, debit_wallet_id=funding_wallet, credit_wallet_id=wallet_id,
            amount_kobo=ledger.MAX_TRANSFER_KOBO + 1))
    transactions.run(lambda: ledger.post_transfer(
        kind=KIND_FUNDING, debit_wallet_id=funding_wallet, credit_wallet_id=wallet_id,
        amount_kobo=ledger.MAX_TRANSFER_KOBO))
    assert wallet_balance(wallet_id) == ledger.MAX_TRANSFER_KOBO


# --- check_invariants on a live system -------------------------------------------------


def test_biller_clearing_check_has_no_false_alarm_under_traffic(app, interleave):
    """The audit page and ``flask ledger check`` run while customers pay.
    The check reads biller_clearing's balance and the payments' total; a
    payment committed between the two reads must not look like money
    missing from biller_clearing."""
    user = make_user(balance_kobo=500_000)
    make_payment(user, amount_kobo=100_000)
    user_id = user.id

    def customer_pays():
        make_payment(db.session.get(User, user_id), amount_kobo=50_000)

    hook = interleave(lambda s: " ".join(s.split()).startswith("SELECT wallets.balance_kobo"), 1,
                      lambda: in_other_worker(app, customer_pays))
    violations = ledger_invariants.check_invariants()
    db.session.rollback()
    assert hook.fired
    assert violations == []
    assert_books_balance()
