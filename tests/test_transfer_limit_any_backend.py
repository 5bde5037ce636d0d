"""The daily transfer limit under real threads on whichever backend the
test run uses (tests/test_transfer_concurrency.py runs on PostgreSQL only):
on SQLite the no-op UPDATE of ``lock_wallets`` must make each transfer the
one writer before it reads the day's sum, so parallel transfers cannot pass
the limit together."""

from __future__ import annotations

from tests.helpers import assert_books_balance
from tests.test_concurrency import app, run_threads, wallet_balance  # noqa: F401 - the fixture
from tests.test_transfer_concurrency import customer, send


def test_parallel_transfers_pass_the_daily_limit_exactly_as_often_as_it_allows(app):  # noqa: F811
    app.config["TRANSFER_DAILY_LIMIT_KOBO"] = 10_000_00
    a = customer("ada@example.com", 1_000_000_00)
    recipients = [customer(f"r{n}@example.com", 0) for n in range(4)]

    results = run_threads(app, 12, lambda index: send(a, recipients[index % 4], 1_500_00))
    assert results.count(True) == 6 and results.count("limit") == 6, results
    assert wallet_balance(a) == 1_000_000_00 - 6 * 1_500_00
    assert sum(wallet_balance(r) for r in recipients) == 6 * 1_500_00
    assert_books_balance()


def test_a_double_submit_racing_itself_gets_the_first_transfer_not_a_refusal(app):  # noqa: F811
    """Eight submits of one form (one key) at once, each for the whole day's
    limit: one sends, every other answers with that same transfer, none says
    "over your daily limit" about the money the first submit just sent."""
    import secrets

    from billvend.accounts.models import User
    from billvend.ledger import limits
    from billvend.ledger import services as ledger
    from billvend.platform.extensions import db
    from billvend.transfers import services as transfers

    app.config["TRANSFER_DAILY_LIMIT_KOBO"] = 5_000_00
    a = customer("ada@example.com", 10_000_00)
    b = customer("bola@example.com", 0)
    key = secrets.token_urlsafe(16)

    def one(index: int):
        sender, recipient = db.session.get(User, a), db.session.get(User, b)
        try:
            sent = transfers.send(sender, recipient, 5_000_00, None, key)
        except (ledger.InsufficientFunds, limits.DailyLimitExceeded):
            return "refused"
        return sent.transfer.reference, sent.created

    results = run_threads(app, 8, one)
    assert "refused" not in results, results
    assert len({reference for reference, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 7 + [True]
    assert wallet_balance(a) == 5_000_00 and wallet_balance(b) == 5_000_00
    assert_books_balance()
