"""How fast is every admin list with 100k payments?

Seeds a throwaway database by bulk insert (users, fundings, 100k payments with
their debits, reversals, ledger entries and timeline events, admin actions),
checks the books balance, then renders every admin list page through the
Flask test client as a signed-in admin and prints the median and worst time
of several runs per page. Not part of ``make test``.

    .venv/bin/python bench/admin_lists.py                       # SQLite file in a temp dir
    .venv/bin/python bench/admin_lists.py --payments 1000000    # a million
    .venv/bin/python bench/admin_lists.py --database-url postgresql://postgres@127.0.0.1/postgres

With a PostgreSQL URL it creates (and afterwards drops) its own database.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from billvend import create_app
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants  # noqa: E402
from billvend.platform.config import _database_url  # noqa: E402
from billvend.platform.extensions import db  # noqa: E402
from billvend.ledger.models import (  # noqa: E402
    BILLER_CLEARING_WALLET, FUNDING_WALLET, LedgerEntry, Transfer, Wallet,
)
from billvend.accounts.models import AdminAction, User
from billvend.funding.models import Funding
from billvend.vending.models import Payment, PaymentEvent
from billvend.platform.models import utcnow
from billvend.vending.providers import DISCOS  # noqa: E402

PASSWORD = "bench password 1"
STATUSES = [("successful", 80), ("reversed", 12), ("unknown", 3), ("failed", 1),
            ("pending", 2), ("vending", 2)]
CHUNK = 10_000


def insert(model, rows):
    for i in range(0, len(rows), CHUNK):
        db.session.execute(sa.insert(model.__table__), rows[i:i + CHUNK])


def seed(n_payments: int, n_users: int, rng: random.Random) -> dict:
    now = utcnow()
    ledger.ensure_system_wallets()
    funding_wallet = ledger.system_wallet_id(FUNDING_WALLET)
    clearing_wallet = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    admin = User(email="admin@example.com", is_admin=True)
    admin.set_password(PASSWORD)
    db.session.add(admin)
    ledger.open_wallet(admin)
    db.session.commit()
    password_hash = admin.password_hash
    first_user = admin.id + 1
    start = now - timedelta(days=60)

    users, wallets = [], []
    for i in range(n_users):
        uid = first_user + i
        users.append({"id": uid, "email": f"user{i}@example.com", "password_hash": password_hash,
                      "is_admin": False, "created_at": start})
        wallets.append({"id": uid + 1000, "user_id": uid, "system_code": None, "balance_kobo": 0,
                        "version": 0, "created_at": start})
    insert(User, users)
    insert(Wallet, wallets)
    state = {w["id"]: [0, 0] for w in wallets}  # wallet -> [balance, version]
    state[funding_wallet] = [0, 0]
    state[clearing_wallet] = [0, 0]
    transfers, entries, fundings, pays, events = [], [], [], [], []

    def post(kind, debit, credit, amount, at, payment_id=None, funding_id=None):
        tid = len(transfers) + 1
        transfers.append({"id": tid, "kind": kind, "debit_wallet_id": debit, "credit_wallet_id": credit,
                          "amount_kobo": amount, "payment_id": payment_id, "funding_id": funding_id,
                          "description": kind, "created_at": at})
        for wallet_id, delta in sorted([(debit, -amount), (credit, amount)]):
            s = state[wallet_id]
            s[0] += delta
            s[1] += 1
            entries.append({"transfer_id": tid, "wallet_id": wallet_id, "delta_kobo": delta,
                            "balance_after_kobo": s[0], "wallet_version": s[1], "created_at": at})

    for i, w in enumerate(wallets):
        amount = 5_000_000_00
        fundings.append({"id": i + 1, "reference": f"F{i:011d}", "user_id": w["user_id"],
                         "wallet_id": w["id"], "amount_kobo": amount, "gateway": "bench",
                         "gateway_reference": None, "status": "succeeded",
                         "idempotency_key": f"fund-{i}", "created_at": start})
        post("funding", funding_wallet, w["id"], amount, start, funding_id=i + 1)

    statuses = rng.choices([s for s, _ in STATUSES], weights=[w for _, w in STATUSES], k=n_payments)
    offsets = sorted(rng.uniform(0, 60 * 86400) for _ in range(n_payments))
    discos = list(DISCOS)
    for i in range(n_payments):
        pid = i + 1
        at = start + timedelta(seconds=offsets[i])
        w = wallets[rng.randrange(n_users)]
        status = statuses[i]
        meter_type = "prepaid" if rng.random() < 0.8 else "postpaid"
        amount = rng.randrange(500_00, 20_000_00, 100)
        final = status in ("successful", "reversed")
        pays.append({
            "id": pid, "reference": at.strftime("%Y%m%d%H%M") + f"{pid:012x}", "user_id": w["user_id"],
            "wallet_id": w["id"], "service_id": rng.choice(discos), "meter_type": meter_type,
            "meter_number": f"{rng.randrange(10**12, 10**13)}", "phone": "08031234567",
            "amount_kobo": amount, "status": status, "idempotency_key": f"pay-{pid}",
            "customer_name": "BENCH CUSTOMER", "customer_address": None,
            "token": f"{rng.randrange(10**19, 10**20)}" if status == "successful" and meter_type == "prepaid" else None,
            "units_kwh": None, "receipt_reference": None, "provider_code": None, "provider_message": None,
            "vend_attempts": 0 if status == "pending" else 1, "requery_count": 0,
            "needs_attention": status == "unknown" and rng.random() < 0.5,
            "claimed_at": None if status == "pending" else at, "next_requery_at": None,
            "finalized_at": at if final else None, "created_at": at, "updated_at": at,
        })
        events.append({"payment_id": pid, "from_status": None, "to_status": "pending",
                       "provider_code": None, "message": "Wallet debited", "created_at": at})
        if status != "pending":
            events.append({"payment_id": pid, "from_status": "pending", "to_status": status,
                           "provider_code": None, "message": "bench", "created_at": at})
        post("bill_payment", w["id"], clearing_wallet, amount, at, payment_id=pid)
        if status == "reversed":
            post("reversal", clearing_wallet, w["id"], amount, at + timedelta(seconds=1), payment_id=pid)

    insert(Funding, fundings)
    insert(Payment, pays)
    insert(Transfer, transfers)
    insert(LedgerEntry, entries)
    insert(PaymentEvent, events)
    for wallet_id, (balance, version) in state.items():
        db.session.execute(sa.update(Wallet.__table__).where(Wallet.__table__.c.id == wallet_id)
                           .values(balance_kobo=balance, version=version))
    insert(AdminAction, [{"admin_id": admin.id, "payment_id": rng.randrange(1, n_payments + 1),
                          "action": "requery", "reason": "bench", "result": "done: bench",
                          "created_at": now} for _ in range(1000)])
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
            for table in ("users", "wallets", "fundings", "payments", "transfers", "ledger_entries",
                          "payment_events", "admin_actions"):
                conn.execute(sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    else:
        with db.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    middle = pays[n_payments // 2]
    return {"user_wallet": wallets[0]["id"], "clearing_wallet": clearing_wallet,
            "user_email": users[3]["email"], "meter": pays[-10]["meter_number"],
            "reference": pays[-20]["reference"], "middle": middle, "now": now}


def timed(client, url: str, runs: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        response = client.get(url)
        body = response.get_data()
        times.append(time.perf_counter() - t0)
        assert response.status_code == 200, (url, response.status_code)
        size = len(body)
    return statistics.median(times), max(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    drop = None
    if args.database_url:
        server = sa.engine.make_url(_database_url(args.database_url))
        name = f"billvend_bench_{uuid.uuid4().hex[:8]}"
        admin_engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)

        def drop():
            with admin_engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        url = "sqlite:///" + str(Path(tempfile.mkdtemp(prefix="billvend-bench-")) / "bench.sqlite3")

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "HUEY_IMMEDIATE": True, "TESTING": True,
                      "SECRET_KEY": "bench", "REDIS_URL": None,
                      "HTMX_URL": "/static/vendor/htmx.min.js"})
    try:
        with app.app_context():
            db.create_all()
            t0 = time.perf_counter()
            info = seed(args.payments, args.users, random.Random(6))
            print(f"{db.engine.dialect.name}: seeded {args.payments:,} payments, {args.users:,} users "
                  f"in {time.perf_counter() - t0:.1f} s")
            violations = ledger_invariants.check_invariants()
            print(f"ledger check: {len(violations)} violations")
            db.session.remove()

        client = app.test_client()
        html = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
        client.post("/login", data={"email": "admin@example.com", "password": PASSWORD, "csrf_token": token})

        middle = info["middle"]
        cursor = f"{(middle['created_at'] - __import__('datetime').datetime(1970, 1, 1, tzinfo=middle['created_at'].tzinfo)) // timedelta(microseconds=1)}.{middle['id']}"
        week_from = (info["now"] - timedelta(days=27)).date().isoformat()
        week_to = (info["now"] - timedelta(days=21)).date().isoformat()
        pages = [
            ("overview", "/admin/"),
            ("invariants panel", "/admin/invariants"),
            ("payments, newest", "/admin/payments"),
            ("payments, page in the middle", f"/admin/payments?after={cursor}"),
            ("payments, status=unknown", "/admin/payments?status=unknown"),
            ("payments, status=pending, page 2+", f"/admin/payments?status=pending&after={cursor}"),
            ("payments, disco", "/admin/payments?disco=kano-electric"),
            ("payments, meter type", "/admin/payments?meter_type=postpaid"),
            ("payments, customer email", f"/admin/payments?email={info['user_email']}"),
            ("payments, a week", f"/admin/payments?date_from={week_from}&date_to={week_to}"),
            ("payments, all filters", f"/admin/payments?status=successful&disco=ikeja-electric&meter_type=prepaid&date_from={week_from}&date_to={week_to}"),
            ("payments, search meter", f"/admin/payments?q={info['meter']}"),
            ("payments, search reference", f"/admin/payments?q={info['reference']}"),
            ("payment detail", f"/admin/payments/{info['reference']}"),
            ("stuck payments", "/admin/stuck"),
            ("wallets", "/admin/wallets"),
            ("customer wallet statement", f"/admin/wallets/{info['user_wallet']}"),
            ("biller_clearing statement", f"/admin/wallets/{info['clearing_wallet']}"),
            ("biller_clearing, old page", f"/admin/wallets/{info['clearing_wallet']}?before=1000"),
            ("audit log", "/admin/actions"),
            ("CSV export, a week", f"/admin/payments.csv?date_from={week_from}&date_to={week_to}"),
            ("CSV export, everything", "/admin/payments.csv"),
        ]
        print(f"{'page':38} {'median':>9} {'worst':>9} {'bytes':>11}")
        slow = []
        for label, path in pages:
            runs = 1 if label.startswith("CSV export, everything") else args.runs
            median, worst, size = timed(client, path, runs)
            print(f"{label:38} {median * 1000:8.0f}ms {worst * 1000:8.0f}ms {size:11,}")
            if median >= 1.0 and not label.startswith("CSV"):
                slow.append(label)
        print("every list under 1 s" if not slow else f"OVER 1 s: {', '.join(slow)}")
        return 1 if slow else 0
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
        if drop:
            drop()


if __name__ == "__main__":
    raise SystemExit(main())
