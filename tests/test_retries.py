"""Lost races are retried, and never reach a user as a 500.

``ledger.unit_of_work`` reruns a whole transaction after a deadlock,
serialization failure or stale ORM version; once its attempts are used up the
web layer answers 503 with nothing charged. The errors are injected here (real
races are in test_concurrency.py, on PostgreSQL).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.funding.models import Funding
from billvend.ledger.models import Wallet
from tests.conftest import form_tokens

ROOT = Path(__file__).resolve().parent.parent


class FakeDriverError(Exception):
    def __init__(self, sqlstate: str):
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def db_error(sqlstate: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE wallets ...", {}, FakeDriverError(sqlstate))


@pytest.mark.parametrize("error", [db_error("40P01"), db_error("40001"), StaleDataError("stale")],
                         ids=["deadlock", "serialization", "stale"])
def test_transient_errors_are_retried(app, error):
    calls, retries = [], []

    @ledger.unit_of_work(on_retry=lambda attempt, exc: retries.append(attempt))
    def work():
        calls.append(1)
        if len(calls) < 3:
            raise error
        return "done"

    assert work() == "done"
    assert len(calls) == 3 and retries == [1, 2]


@pytest.mark.parametrize("error", [db_error("23505"), ValueError("bad input"), ledger.InsufficientFunds(1, 5)],
                         ids=["unique", "value", "insufficient"])
def test_other_errors_are_not_retried(app, error):
    calls = []

    @ledger.unit_of_work
    def work():
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        work()
    assert len(calls) == 1


def test_retries_are_bounded(app):
    calls = []

    @ledger.unit_of_work(attempts=4, base_delay_seconds=0)
    def work():
        calls.append(1)
        raise db_error("40P01")

    with pytest.raises(sa.exc.OperationalError):
        work()
    assert len(calls) == 4


def balance(email: str) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(Wallet.balance_kobo).join(Wallet.user).where(
        sa.text("users.email = :email")).params(email=email))


def test_a_deadlock_mid_funding_is_retried_and_funds_once(app, client, auth, monkeypatch):
    auth.signup()
    real_post_transfer = ledger.post_transfer
    failures = []

    def deadlock_once(**kwargs):
        if not failures:
            failures.append(1)
            raise db_error("40P01")
        return real_post_transfer(**kwargs)

    monkeypatch.setattr(ledger, "post_transfer", deadlock_once)
    data = form_tokens(client, "/wallet/fund") | {"amount": "1000"}
    response = client.post("/wallet/fund", data=data)
    assert response.status_code == 303
    # The credit happens when the customer is back from the (simulated) checkout.
    response = client.get(response.headers["Location"])
    assert response.status_code == 303
    assert failures == [1]
    assert balance("ada@example.com") == 100_000
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 1
    assert ledger_invariants.check_invariants() == []


@pytest.mark.parametrize("path,fields", [
    ("/wallet/fund", {"amount": "1000"}),
    ("/bills/electricity", {"disco": "ikeja-electric", "meter_type": "prepaid",
                            "meter_number": "1111111111111", "amount": "1000", "phone": "08031234567",
                            "verified_meter": "ikeja-electric:prepaid:1111111111111"}),
])
@pytest.mark.parametrize("error", [StaleDataError("stale"), db_error("40001")], ids=["stale", "serialization"])
def test_a_race_lost_every_time_is_a_503_not_a_500(app, client, auth, fund, monkeypatch, path, fields, error):
    auth.signup()
    fund("5000")

    def always_loses(**kwargs):
        raise error

    monkeypatch.setattr(ledger, "post_transfer", always_loses)
    monkeypatch.setattr(transactions.time, "sleep", lambda seconds: None)
    response = client.post(path, data=form_tokens(client, path) | fields)
    if path == "/wallet/fund":
        # The credit is made on the way back from the checkout, after the
        # gateway took the money: "nothing was charged" would be false there.
        assert response.status_code == 303
        response = client.get(response.headers["Location"])
        assert response.status_code == 503
        assert b"money is safe" in response.data and b"nothing was charged" not in response.data
    else:
        assert response.status_code == 503
        assert b"nothing was charged" in response.data
    assert balance("ada@example.com") == 500_000
    assert ledger_invariants.check_invariants() == []


def test_postgresql_pass_without_a_database_url_fails():
    """The PostgreSQL pass never quietly falls back to SQLite."""
    env = {"PATH": "/usr/bin:/bin", "BILLVEND_TEST_BACKEND": "postgresql", "CI": "true"}
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_money.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "TEST_DATABASE_URL" in result.stdout + result.stderr
