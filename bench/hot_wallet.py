"""Hot-wallet benchmark: how fast can one wallet be debited, and at what cost?

N threads (1, 8, 32 by default) debit ONE wallet row as fast as they can, for
a few seconds each, through these paths, in the same run and interleaved:

``ceiling``
    a bare ``UPDATE wallets SET balance_kobo = balance_kobo - :x WHERE id =
    :id AND balance_kobo >= :x`` in its own transaction, on a DBAPI cursor
    (the cheapest client path, the one ``post_transfer`` uses for its hot
    call): the physical ceiling for one row (each commit must finish before
    the next writer gets the row lock, so this measures lock hold time plus
    commit). Every ratio is against this.
``ceiling-core``
    the same statement through SQLAlchemy Core (``engine.begin()`` and
    ``Connection.execute``), for reference: the client-side cost of
    SQLAlchemy's result handling while the row is locked.
``ledger``
    ``billvend.ledger.services.post_transfer`` (transfer + two ledger entries + both
    balances, in the caller's transaction) and commit, wrapped in
    ``ledger.unit_of_work``; each thread credits its own wallet, so only the
    debit wallet is hot, as in the ceiling.
``ledger+clearing``
    the same, but every thread credits one shared wallet, as real payments all
    credit ``biller_clearing``: two hot rows.
``naive``
    the reference anti-pattern: load the ``Wallet`` through the ORM, check the
    balance in Python, assign, commit with the ORM's version check, and on
    ``StaleDataError`` retry with jittered backoff (at most 10 attempts, then
    give up).

Prints ops/s, the ratio to the ceiling, retries, give-ups, and whether every
final balance is exact (start minus counted successes, and the ledger
invariants hold for the ledger paths). Needs PostgreSQL: SQLite serialises all
writers, so there is nothing to measure. ``BENCH_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1/postgres``) names a server; the benchmark
creates and drops its own database there.

Run with ``make bench`` or ``python bench/hot_wallet.py --threads 1,8,32
--seconds 3 --rounds 3``. Figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from billvend import create_app
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants  # noqa: E402
from billvend.platform.config import _database_url  # noqa: E402
from billvend.platform.extensions import db  # noqa: E402
from billvend.ledger.models import FUNDING_WALLET, KIND_ADJUSTMENT, LedgerEntry, Transfer, Wallet  # noqa: E402
from billvend.accounts.models import User

DEFAULT_URL = "postgresql://postgres@127.0.0.1/postgres"
START_BALANCE_KOBO = 10**15
AMOUNT_KOBO = 100
NAIVE_MAX_ATTEMPTS = 10
VARIANTS = ("ceiling", "ceiling-core", "ledger", "ledger+clearing", "naive")


@dataclass
class Counts:
    ops: int = 0
    warm_ups: int = 0
    retries: int = 0
    give_ups: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: "Counts") -> None:
        self.ops += other.ops
        self.warm_ups += other.warm_ups
        self.retries += other.retries
        self.give_ups += other.give_ups
        self.errors += other.errors


@dataclass
class Result:
    variant: str
    threads: int
    ops_per_second: float
    retries: int
    give_ups: int
    exact: bool
    errors: list[str]


#: The invariants of the ledger's bookkeeping (tests/helpers.py has the same set).
LEDGER_STRUCTURE = frozenset({"transfer_balanced", "balance_matches", "versions_gapless",
                              "user_wallet_negative"})


def new_wallet(balance_kobo: int) -> int:
    """A user wallet funded through the ledger (so its statement is whole)."""
    user = User(email=f"bench-{secrets.token_hex(6)}@example.com", password_hash="-")
    db.session.add(user)
    wallet = ledger.open_wallet(user)
    db.session.flush()
    if balance_kobo:
        ledger.post_transfer(kind=KIND_ADJUSTMENT, amount_kobo=balance_kobo,
                             debit_wallet_id=ledger.system_wallet_id(FUNDING_WALLET),
                             credit_wallet_id=wallet.id, description="bench start")
    db.session.commit()
    return wallet.id


def balance_of(wallet_id: int) -> int:
    return db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.id == wallet_id))


CEILING_DRIVER_SQL = (
    "UPDATE wallets SET balance_kobo = balance_kobo - %(x)s "
    "WHERE id = %(id)s AND balance_kobo >= %(x)s RETURNING balance_kobo"
)
CEILING_SQL = sa.text(
    "UPDATE wallets SET balance_kobo = balance_kobo - :x "
    "WHERE id = :id AND balance_kobo >= :x RETURNING balance_kobo"
)


def make_op(variant: str, hot_id: int, sink_id: int, counts: Counts):
    """One debit of ``AMOUNT_KOBO`` from ``hot_id``; returns True if it happened."""
    if variant == "ceiling":
        def op() -> bool:
            dbapi_connection = db.engine.raw_connection()  # from the pool, as a session would
            try:
                cursor = dbapi_connection.cursor()
                cursor.execute(CEILING_DRIVER_SQL, {"x": AMOUNT_KOBO, "id": hot_id})
                debited = cursor.fetchone() is not None
                cursor.close()
                dbapi_connection.commit()
                return debited
            finally:
                dbapi_connection.close()
        return op

    if variant == "ceiling-core":
        def op() -> bool:
            with db.engine.begin() as conn:
                return conn.execute(CEILING_SQL, {"x": AMOUNT_KOBO, "id": hot_id}).first() is not None
        return op

    if variant.startswith("ledger"):
        def on_retry(attempt: int, exc: BaseException) -> None:
            counts.retries += 1

        @ledger.unit_of_work(on_retry=on_retry)
        def op() -> bool:
            ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=hot_id,
                                 credit_wallet_id=sink_id, amount_kobo=AMOUNT_KOBO)
            return True  # the unit of work commits
        return op

    def naive() -> bool:
        for attempt in range(NAIVE_MAX_ATTEMPTS):
            wallet = db.session.get(Wallet, hot_id, populate_existing=True)
            if wallet.balance_kobo < AMOUNT_KOBO:
                db.session.rollback()
                return False
            wallet.balance_kobo -= AMOUNT_KOBO
            wallet.version += 1
            try:
                db.session.commit()
                return True
            except StaleDataError:
                db.session.rollback()
                counts.retries += 1
                time.sleep(random.uniform(0, 0.001 * 2**attempt))
        counts.give_ups += 1
        return False
    return naive


def run(app, variant: str, threads: int, seconds: float) -> Result:
    with app.app_context():
        hot_id = new_wallet(START_BALANCE_KOBO)
        shared_sink = new_wallet(0)
        sinks = [shared_sink if variant != "ledger" else new_wallet(0) for _ in range(threads)]
        invariants_before = {v for v in ledger_invariants.check_invariants()}
    barrier = threading.Barrier(threads + 1)
    per_thread = [Counts() for _ in range(threads)]
    window: dict[str, float] = {}

    def worker(index: int) -> None:
        counts = per_thread[index]
        with app.app_context():
            op = make_op(variant, hot_id, sinks[index], counts)
            try:
                # Warm up (a pooled connection, compiled statements); counted
                # apart so the balance check still adds up.
                counts.warm_ups = int(op())
                counts.retries = counts.give_ups = 0
            except Exception as exc:  # noqa: BLE001 - reported, not hidden
                counts.errors.append(repr(exc))
            barrier.wait()
            try:
                while time.perf_counter() < window["end"]:
                    if op():
                        counts.ops += 1
            except Exception as exc:  # noqa: BLE001
                counts.errors.append(repr(exc))
            finally:
                db.session.remove()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    window["end"] = float("inf")
    for thread in pool:
        thread.start()
    barrier.wait()  # every thread has warmed up: start the clock
    started = time.perf_counter()
    window["end"] = started + seconds
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started

    total = Counts()
    for counts in per_thread:
        total.add(counts)
    with app.app_context():
        debits = total.ops + total.warm_ups
        exact = balance_of(hot_id) == START_BALANCE_KOBO - debits * AMOUNT_KOBO
        if variant.startswith("ledger"):
            # Bare adjustments (no approval) break the rules about what money
            # means by design; the ledger's own bookkeeping must hold.
            new_violations = [v for v in ledger_invariants.check_invariants() if v not in invariants_before
                              and v.invariant in LEDGER_STRUCTURE]
            exact = exact and not new_violations
            total.errors += [str(v) for v in new_violations]
            credited = sum(balance_of(s) for s in set(sinks))
            exact = exact and credited == debits * AMOUNT_KOBO
    return Result(variant, threads, total.ops / elapsed, total.retries, total.give_ups,
                  exact, total.errors)


def drop_ledger_foreign_keys() -> None:
    """Drop the foreign keys that every transfer checks while a wallet is
    locked (transfers' two wallet columns, ledger entries' wallet and
    transfer), in the benchmark's database only: ``--drop-foreign-keys``
    shows what that integrity costs, as the README's figures do."""
    with db.engine.begin() as conn:
        for table in (Transfer.__table__, LedgerEntry.__table__):
            for constraint in table.foreign_key_constraints:
                if constraint.referred_table.name in ("wallets", "transfers"):
                    conn.execute(sa.schema.DropConstraint(constraint))


def create_database(server_url: str) -> tuple[sa.Engine, str]:
    admin_url = sa.engine.make_url(_database_url(server_url))
    if not admin_url.drivername.startswith("postgresql"):
        raise SystemExit("bench/hot_wallet.py needs PostgreSQL (BENCH_DATABASE_URL)")
    name = f"billvend_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return admin, admin_url.set(database=name).render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,8,32", help="comma-separated thread counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (figures are medians)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--drop-foreign-keys", action="store_true",
                        help="drop the ledger's foreign keys in the benchmark's own database "
                             "first, to measure what they cost (never do this to a real one)")
    args = parser.parse_args(argv)
    thread_counts = [int(n) for n in args.threads.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL

    admin, bench_url = create_database(url)
    app = create_app({
        "SQLALCHEMY_DATABASE_URI": bench_url,
        # One connection per thread and no pre-ping round trip: measure the
        # transaction, not the pool.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": max(thread_counts) + 2, "max_overflow": 0,
                                      "pool_pre_ping": False},
        "HUEY_IMMEDIATE": True,
        "REDIS_URL": None,
    })
    results: dict[tuple[str, int], list[Result]] = {}
    ok = True
    try:
        with app.app_context():
            db.create_all()
            ledger.ensure_system_wallets()
            if args.drop_foreign_keys:
                drop_ledger_foreign_keys()
        print(f"hot wallet: {args.rounds} round(s) x {args.seconds:g} s per run, "
              f"{AMOUNT_KOBO} kobo per debit, PostgreSQL {bench_url.rsplit('@', 1)[-1]}"
              + (", ledger foreign keys DROPPED" if args.drop_foreign_keys else ""))
        for round_number in range(args.rounds):
            for threads in thread_counts:
                for variant in variants:
                    result = run(app, variant, threads, args.seconds)
                    results.setdefault((variant, threads), []).append(result)
                    print(f"  round {round_number + 1} {variant:>16} x{threads:<3} "
                          f"{result.ops_per_second:9.0f} ops/s  retries {result.retries:6d}  "
                          f"give-ups {result.give_ups:4d}  exact {result.exact}"
                          + (f"  errors {result.errors[:3]}" if result.errors else ""),
                          flush=True)
        print()
        print(report(results, thread_counts, variants))
        for runs in results.values():
            for result in runs:
                ok = ok and result.exact and not result.errors
                if result.variant != "naive":
                    ok = ok and result.give_ups == 0
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{bench_url.rsplit("/", 1)[-1]}" WITH (FORCE)'))
        admin.dispose()
    if not ok:
        print("FAILED: a balance was not exact, an invariant broke, or a safe path gave up")
        return 1
    return 0


def report(results, thread_counts, variants) -> str:
    """A Markdown table of medians: ops/s, ratio to the ceiling, retries, give-ups."""
    def median(variant: str, threads: int, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[(variant, threads)])

    lines = ["| threads | " + " | ".join(
        f"{v} ops/s" + ("" if v == "ceiling" else f" | {v} ratio | {v} retries | {v} give-ups")
        for v in variants) + " | exact |"]
    lines.append("|" + "---|" * (lines[0].count("|") - 1))
    for threads in thread_counts:
        ceiling = median("ceiling", threads, "ops_per_second") if "ceiling" in variants else None
        cells = [str(threads)]
        for variant in variants:
            ops = median(variant, threads, "ops_per_second")
            cells.append(f"{ops:.0f}")
            if variant != "ceiling":
                cells.append(f"{ops / ceiling:.2f}" if ceiling else "-")
                cells.append(f"{median(variant, threads, 'retries'):.0f}")
                cells.append(f"{median(variant, threads, 'give_ups'):.0f}")
        exact = all(r.exact for v in variants for r in results[(v, threads)])
        cells.append("yes" if exact else "NO")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
