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
