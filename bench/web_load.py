"""Load benchmark of the deployed topology (issues 14 and 25): the web tier
never waits on the provider, costs a fraction of a static file, and slow
clients cannot stall it.

Starts the Procfile's ``web`` (gunicorn, gevent workers; ``--web N``
processes) and ``worker`` (``huey_consumer``) as production runs them, on
PostgreSQL (its own database on ``BENCH_DATABASE_URL``'s server, created and
dropped) and a private ``redis-server``, rate limits ON (Redis storage, the
test stack's generous limits), with the simulated provider at a 2 s vend
delay and 0.5 s meter verification. It signs up K users over HTTP, funds
them through the ledger's funding service in-process (not the /wallet/fund
flow), lets each see the name on a meter (the htmx check, as the pay page
does) and pays once each (a final payment per user), then in ONE run
measures, back to back with ``wrk`` (a Lua script rotating the users'
session cookies):

1. ``GET /static/js/app.js`` through the same gunicorn: every ratio's
   denominator;
2. the authenticated dashboard ``GET /`` (target >= 0.3 of 1.);
3. the status partial of a final payment, answered at once (target >= 0.5
   of 1.);
4. normal ``GET /`` requests while ``--slow-clients`` (200) connections each
   send one header line every 5 s (target: p99 <= 1 s, none failed);
5. ``POST /bills/electricity`` with documented fields only and a unique
   ``idempotency_key`` per request: payments created per second against 2.
   (target >= 0.5);

and unless ``--web-only``:

6. vends finished per second while the backlog those POSTs queued drains
   (the worker is stopped during 5. and started after it, so every vend
   thread has work), against the ideal ``WORKER_CONCURRENCY / provider
   delay`` (target >= 0.9);
7. time to token as a polling browser sees it (submit -> token on the status
   long poll), quiet, one payment at a time (target p95 <= delay + 0.3 s),
   and how long after the worker recorded it the page saw it;
8. the same under a steady 20 payments/s for 30 s (target p95 <= delay + 1 s);
9. then, on the embedded default (SQLite + SqliteHuey, its own files), how
   long a payment waits in the queue for an idle worker (target <= 0.5 s);

and always ``flask ledger check`` after the run (target: clean).

It prints one table with ratios and pass/fail, and the load average before
and after. Run: ``make bench`` or ``.venv/bin/python bench/web_load.py
[--users 32] [--seconds 10] [--web 2] [--web-only]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import PrivateRedis  # noqa: E402
from tests.stack import SlowClients, Stack  # noqa: E402

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
DISCO = "ikeja-electric"
AMOUNT_NAIRA = "500"
FUND_KOBO = 1_000_000_00

LUA = r"""
-- billvend web_load: authenticated GET / or pay POSTs, users round-robin.
local users = {%USERS%}
local threads = {}
local counter = 0
ok, bad = 0, 0  -- globals: done() reads them through thread:get

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  mode = args[1]
  math.randomseed(os.time() * 1000 + tid)
  salt = math.random(1, 999999999)
end

function request()
  counter = counter + 1
  local u = users[((counter + tid) % #users) + 1]
  if mode == "get" then
    return wrk.format("GET", "/", {["Cookie"] = u[1]})
  end
  if mode == "static" then
    return wrk.format("GET", "/static/js/app.js")
  end
  if mode == "status" then
    return wrk.format("GET", "/payments/" .. u[4] .. "/status", {["Cookie"] = u[1], ["HX-Request"] = "true"})
  end
  local key = string.format("w%02d%09d%013d", tid, salt, counter)
  local body = "csrf_token=" .. u[2] .. "&disco=%DISCO%&meter_type=prepaid&meter_number=" .. u[3]
    .. "&amount=%AMOUNT%&phone=08031234567&idempotency_key=" .. key
  return wrk.format("POST", "/bills/electricity",
    {["Cookie"] = u[1], ["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end

function response(status, headers, body)
  if (mode ~= "post" and status == 200) or (mode == "post" and status == 303) then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
  end
  io.write(string.format("BENCH ok=%d bad=%d p50_ms=%.1f p99_ms=%.1f\n", total_ok, total_bad,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


class User:
    def __init__(self, base_url: str, n: int):
        self.base_url = base_url
        self.session = requests.Session()
        self.email = f"load{n}-{uuid.uuid4().hex[:6]}@example.com"
        # An ordinary meter (not a test meter): 13 digits, one per user.
        self.meter = f"45{n:011d}"

    def csrf(self, path: str) -> str:
        return CSRF_RE.search(self.session.get(self.base_url + path, timeout=30).text).group(1)

    def signup(self) -> None:
        password = "correct horse battery 1"
        response = self.session.post(self.base_url + "/signup", data={
            "csrf_token": self.csrf("/signup"), "email": self.email, "full_name": "Load Test",
            "phone": "08031234567", "password": password, "confirm_password": password}, timeout=30)
        assert response.status_code == 200, response.status_code

    def check_meter(self) -> None:
        response = self.session.post(self.base_url + "/bills/electricity/verify", headers={"HX-Request": "true"},
                                     data={"csrf_token": self.csrf("/bills/electricity"), "disco": DISCO,
                                           "meter_type": "prepaid", "meter_number": self.meter}, timeout=30)
        # The htmx check shows the name on the meter (only the review step marks
        # the form verified_meter, issue 16).
        assert response.status_code == 200 and 'data-testid="customer"' in response.text, response.text[:300]

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.session.cookies)

    def pay_and_watch(self, csrf: str, deadline_seconds: float = 60) -> dict:
        """Submit a payment, then long-poll the status like the page does.
        Returns the wall-clock moments (time.time())."""
        submitted = time.time()
        response = self.session.post(self.base_url + "/bills/electricity", data={
            "csrf_token": csrf, "disco": DISCO, "meter_type": "prepaid", "meter_number": self.meter,
            "amount": AMOUNT_NAIRA, "phone": "08031234567",
            "idempotency_key": "q" + uuid.uuid4().hex}, allow_redirects=False, timeout=30)
        assert response.status_code == 303, response.status_code
        reference = response.headers["Location"].rsplit("/", 1)[1]
        status = "pending"
        stop = time.monotonic() + deadline_seconds
        while time.monotonic() < stop:
            partial = self.session.get(f"{self.base_url}/payments/{reference}/status",
                                       params={"since": status}, headers={"HX-Request": "true"},
                                       timeout=30).text
            status = re.search(r'data-status="([a-z]+)"', partial).group(1)
            if status in ("successful", "reversed", "failed"):
                return {"reference": reference, "submitted": submitted, "seen": time.time(), "status": status}
        raise RuntimeError(f"{reference} not final in {deadline_seconds} s")


def run_wrk(base_url: str, lua_path: Path, mode: str, seconds: int, connections: int) -> dict:
    completed = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(lua_path),
         base_url, "--", mode], capture_output=True, text=True, timeout=seconds + 120)
    output = completed.stdout
    rate_match, bench_match = re.search(r"Requests/sec:\s+([0-9.]+)", output), re.search(r"BENCH (.*)", output)
    if completed.returncode != 0 or not rate_match or not bench_match:
        raise RuntimeError(f"wrk failed ({completed.returncode}):\n{output}\n{completed.stderr}")
    rate = float(rate_match.group(1))
    stats = dict(re.findall(r"(\w+)=([0-9.]+)", bench_match.group(1)))
    return {"rate": rate, **{k: float(v) for k, v in stats.items()}, "raw": output}


def under_slow_clients(base_url: str, port: int, cookie: str, slow_count: int, seconds: float,
                       threads: int = 4) -> dict:
    """Normal requests (an authenticated ``GET /``, a new connection each)
    from ``threads`` threads for ``seconds`` while ``slow_count`` slow
    clients (:class:`tests.stack.SlowClients`, a header line every 5 s) hold
    connections open. Returns the latencies (s), the failures (non-200 or
    no answer within 30 s) and the slow connections opened and dropped."""
    latencies: list[float] = []
    failures: list[str] = []
    with SlowClients(port, slow_count) as slow:
        time.sleep(6)  # every slow connection has sent a line or two

        def normal() -> None:
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    code = requests.get(base_url + "/", headers={"Cookie": cookie}, timeout=30).status_code
                except requests.RequestException as exc:
                    failures.append(type(exc).__name__)
                    continue
                latencies.append(time.monotonic() - started)
                if code != 200:
                    failures.append(str(code))
                time.sleep(0.05)

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: normal(), range(threads)))
        opened, dropped = slow.opened, slow.dropped
    return {"latencies": latencies, "failures": failures, "opened": opened, "dropped": dropped}


def fund_users(env: dict, emails: list[str]) -> None:
    """Credit each user through the funding service, in-process (one short
    Python run against the bench database)."""
    code = f"""
import secrets
from billvend import create_app
from billvend.funding import seed
from billvend.platform.extensions import db
from billvend.accounts.models import User
import sqlalchemy as sa
app = create_app()
with app.app_context():
    for email in {emails!r}:
        user = db.session.scalar(sa.select(User).where(User.email == email))
        seed.fund_wallet(user, {FUND_KOBO}, secrets.token_urlsafe(16))
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=300)


def wait_all_final(engine, timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            open_count = conn.scalar(sa.text(
                "SELECT count(*) FROM payments WHERE status NOT IN ('successful', 'reversed')"))
        if open_count == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{open_count} payments still not final after {timeout_seconds} s")


def vend_throughput(engine, since: datetime) -> tuple[float, int]:
    """Vends finished per second while the backlog was full: finishes
    between the 10th and 90th percentile of the payments made since
    ``since``, over that time span (database timestamps)."""
    with engine.connect() as conn:
        finished = [row[0] for row in conn.execute(sa.text(
            "SELECT finalized_at FROM payments WHERE created_at >= :since AND finalized_at IS NOT NULL "
            "ORDER BY finalized_at"), {"since": since})]
    n = len(finished)
    if n < 20:
        return float("nan"), n
    lo, hi = int(n * 0.1), int(n * 0.9)
    span = (finished[hi] - finished[lo]).total_seconds()
    return (hi - lo) / span if span > 0 else float("nan"), n


def queue_latencies(engine, references: list[str]) -> list[float]:
    """Seconds from the payment's ``created_at`` (set when the web request
    builds the row, before its commit and enqueue: an upper bound of the
    commit-to-claim latency) to the worker's claim."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT EXTRACT(EPOCH FROM claimed_at - created_at) FROM payments WHERE reference = ANY(:refs)"),
            {"refs": references}).all()
    return [float(r[0]) for r in rows if r[0] is not None]


def finalized_at(engine, references: list[str]) -> dict[str, float]:
    return {ref: times[2] for ref, times in payment_times(engine, references).items()}


def payment_times(engine, references: list[str]) -> dict[str, tuple[float, float, float]]:
    """``reference: (created_at, claimed_at, finalized_at)`` as Unix times
    (written by the web and worker processes of this host: same clock as
    the client's ``time.time()``)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT reference, EXTRACT(EPOCH FROM created_at), EXTRACT(EPOCH FROM claimed_at), "
            "EXTRACT(EPOCH FROM finalized_at) FROM payments WHERE reference = ANY(:refs)"),
            {"refs": references}).all()
    return {ref: (float(c), float(cl), float(f)) for ref, c, cl, f in rows}


def breakdown(engine, watched: list[dict], delay: float) -> str:
    """Where a time to token goes (medians): the POST until the payment row
    is built, row built -> claimed (the web's commit, the enqueue, the queue),
    the vend beyond the provider's delay (claim, call, record), and recorded
    -> seen by the page."""
    times = payment_times(engine, [w["reference"] for w in watched])
    parts = {"request": [], "queue": [], "vend steps": [], "page": []}
    for w in watched:
        created, claimed, finalized = times[w["reference"]]
        parts["request"].append(created - w["submitted"])
        parts["queue"].append(claimed - created)
        parts["vend steps"].append(finalized - claimed - delay)
        parts["page"].append(w["seen"] - finalized)
    return ", ".join(f"{name} {statistics.median(values) * 1000:.0f} ms" for name, values in parts.items())


def steady_load(users: list[User], csrfs: list[str], rate_per_second: float, seconds: float) -> list[dict]:
    """Open-loop: start a payment (submit + watch) every 1/rate seconds."""
    results: list[dict] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(max_workers=int(rate_per_second * 6)) as pool:
        start = time.monotonic()
        futures = []
        i = 0
        while True:
            due = start + i / rate_per_second
            if due - start >= seconds:
                break
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            # A user watches one payment at a time: each payment gets a fresh
            # session sharing that user's cookies.
            user = users[i % len(users)]
            watcher = User(user.base_url, 0)
            watcher.session.cookies.update(user.session.cookies)
            watcher.meter = user.meter
            futures.append(pool.submit(watcher.pay_and_watch, csrfs[i % len(users)]))
            i += 1
        for future in futures:
            try:
                result = future.result(timeout=120)
                with lock:
                    results.append(result)
            except BaseException as exc:  # noqa: BLE001 - counted and reported
                errors.append(exc)
    if errors:
        print(f"steady load: {len(errors)} payments failed: {errors[:3]}", file=sys.stderr)
    return results


def sqlite_queue_latency(payments_count: int = 10) -> list[float]:
    """The embedded default: the Procfile's processes on SQLite and
    SqliteHuey (no Redis), provider delay 0. After the worker has idled long
    enough for every thread to back off to ``--max-delay``, pay one payment
    every 0.7 s and return each one's row built -> claim seconds."""
    tmp = Path(tempfile.mkdtemp(prefix="billvend-web-load-sqlite-"))
    with Stack(tmp, {"SIMULATOR_SUCCESS_RATE": "1", "SECRET_KEY": "web-load-" + uuid.uuid4().hex}) as stack:
        stack.migrate()
        stack.start("web")
        stack.start("worker")
        user = User(stack.base_url, 99)
        user.signup()
        fund_users(stack.env, [user.email])
        user.check_meter()
        csrf = user.csrf("/bills/electricity")
        time.sleep(8)  # idle: every polling thread reaches its longest pause
        references = []
        for _ in range(payments_count):
            references.append(user.pay_and_watch(csrf)["reference"])
            time.sleep(0.7)
        engine = sa.create_engine(stack.env["DATABASE_URL"])
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT julianday(claimed_at) - julianday(created_at) FROM payments")).all()
        engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    return [float(r[0]) * 86400 for r in rows if r[0] is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run")
    parser.add_argument("--quiet-payments", type=int, default=20)
    parser.add_argument("--steady-rate", type=float, default=20.0)
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument("--provider-delay", type=float, default=2.0)
    parser.add_argument("--web", type=int, default=2, help="web processes (WEB_CONCURRENCY)")
    parser.add_argument("--slow-clients", type=int, default=200,
                        help="slow connections (a header line every 5 s) held open while normal requests run")
    parser.add_argument("--web-only", action="store_true",
                        help="only the web ratios and the slow clients: skip the vend drain, the quiet and "
                             "steady payments and the SQLite run")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    admin = sa.create_engine(args.database_url.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    name = f"billvend_web_load_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    database_url = sa.engine.make_url(args.database_url).set(database=name).render_as_string(hide_password=False)
    redis_server = PrivateRedis()
    tmp = Path(tempfile.mkdtemp(prefix="billvend-web-load-"))
    metrics_dir = tmp / "prometheus"
    metrics_dir.mkdir()
    concurrency = 64
    env = {
        "DATABASE_URL": database_url, "REDIS_URL": redis_server.url,
        "SIMULATOR_DELAY_SECONDS": str(args.provider_delay), "SIMULATOR_SUCCESS_RATE": "1",
        "WEB_CONCURRENCY": str(args.web), "WORKER_CONCURRENCY": str(concurrency),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "SECRET_KEY": "web-load-bench-" + uuid.uuid4().hex,
    }
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with Stack(tmp, env) as stack:
            stack.migrate()
            stack.start("web")
            stack.start("worker")
            base = stack.base_url
            print(f"stack up at {base}; signing up {args.users} users", file=sys.stderr)
            users = [User(base, n) for n in range(args.users)]
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda u: u.signup(), users))
            fund_users(stack.env, [u.email for u in users])
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda u: u.check_meter(), users))  # the name on each meter, as a browser sees it
            csrfs = [u.csrf("/bills/electricity") for u in users]
            # One final payment per user: the status partial answered at once.
            with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
                finals = list(pool.map(lambda uc: uc[0].pay_and_watch(uc[1])["reference"], zip(users, csrfs)))
            load_before = os.getloadavg()[0]

            # json.dumps of ASCII text is a valid Lua string literal.
            lua = LUA.replace("%USERS%", ",".join(
                "{" + ",".join(json.dumps(v) for v in (u.cookie_header(), c, u.meter, f)) + "}"
                for u, c, f in zip(users, csrfs, finals)))
            lua = lua.replace("%DISCO%", DISCO).replace("%AMOUNT%", AMOUNT_NAIRA)
            lua_path = tmp / "web_load.lua"
            lua_path.write_text(lua)

            # Back to back, in ONE run: each ratio holds however loaded the machine is.
            print("wrk: GET /static/js/app.js", file=sys.stderr)
            static = run_wrk(base, lua_path, "static", args.seconds, args.users)
            print("wrk: GET /", file=sys.stderr)
            get = run_wrk(base, lua_path, "get", args.seconds, args.users)
            print("wrk: GET /payments/<final>/status", file=sys.stderr)
            status = run_wrk(base, lua_path, "status", args.seconds, args.users)
            print(f"{args.slow_clients} slow clients; normal GET / meanwhile", file=sys.stderr)
            slow = under_slow_clients(base, stack.port, users[0].cookie_header(), args.slow_clients,
                                      seconds=15)
            with engine.connect() as conn:
                posts_since = conn.scalar(sa.text("SELECT now()"))
            # The worker is stopped while wrk posts (separate dynos in
            # production; here they would share two cores), so the POSTs
            # leave a standing backlog in Redis; started again, it drains
            # that backlog with all WORKER_CONCURRENCY vends in flight.
            stack.stop("worker")
            print("wrk: POST /bills/electricity", file=sys.stderr)
            post = run_wrk(base, lua_path, "post", args.seconds, args.users)
            pipeline = None if args.web_only else measure_pipeline(args, stack, engine, users, csrfs, post,
                                                                    posts_since, concurrency)
            check = subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "ledger", "check"],
                                   cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=300)
            metrics = requests.get(base + "/metrics", timeout=30).text
    finally:
        engine.dispose()
        redis_server.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    sqlite_queue = None
    if not args.web_only:
        print("embedded default: SqliteHuey queue latency", file=sys.stderr)
        sqlite_queue = sqlite_queue_latency()

    rows = web_rows(args, static, get, status, post, slow)
    if pipeline is not None:
        rows += pipeline_rows(args, pipeline, concurrency, sqlite_queue)
    rows.append(("flask ledger check after the run", "clean" if check.returncode == 0 else "VIOLATED", "",
                 "clean", check.returncode == 0))
    if pipeline is not None:
        print(f"quiet time to token, medians: {pipeline['quiet_parts']}")
        print(f"steady time to token, medians: {pipeline['steady_parts']}")
    hits = re.search(r'billvend_meter_verification_lookups_total\{result="hit"\} ([0-9.e+]+)', metrics)
    misses = re.search(r'billvend_meter_verification_lookups_total\{result="miss"\} ([0-9.e+]+)', metrics)
    print()
    print(f"machine: {os.cpu_count()} cores, load average {load_before:.2f} before the wrk runs, "
          f"{os.getloadavg()[0]:.2f} at the end; web: the Procfile's web, {args.web} processes; worker: "
          f"{concurrency} threads; PostgreSQL + Redis; verification cache hits/misses over the run: "
          f"{hits.group(1) if hits else '?'}/{misses.group(1) if misses else '?'}")
    print()
    print("| measure | result | ratio | target | met |")
    print("|---|---|---|---|---|")
    for label, result, ratio_text, target, met in rows:
        print(f"| {label} | {result} | {ratio_text} | {target} | {'yes' if met else '**no**' if target else ''} |")
    if check.returncode != 0:
        print(check.stdout, check.stderr, file=sys.stderr)
    failed = [label for label, _, _, target, met in rows if target and not met]
    return 1 if failed else 0


def _wrk_result(run: dict, expected: int) -> str:
    return (f"{run['rate']:.0f} req/s (p50 {run['p50_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms, "
            f"non-{expected}: {int(run['bad'])})")


def web_rows(args, static: dict, get: dict, status: dict, post: dict, slow: dict) -> list[tuple]:
    """The web tier's rows: each request's req/s against the static file
    served by the same gunicorn in the same run, and the slow clients."""
    created_per_second = post["ok"] / args.seconds
    dashboard, partial, pay = get["rate"] / static["rate"], status["rate"] / static["rate"], \
        created_per_second / get["rate"]
    latencies, failures = slow["latencies"], slow["failures"]
    p99 = percentile(latencies, 99)
    return [
        (f"GET /static/js/app.js (wrk, {args.users} connections)", _wrk_result(static, 200), "1", "",
         static["bad"] == 0),
        ("authenticated GET / (the dashboard)", _wrk_result(get, 200), f"{dashboard:.2f} of the static file",
         ">= 0.3", dashboard >= 0.3 and get["bad"] == 0),
        ("GET /payments/<ref>/status of a final payment (htmx partial, answered at once)",
         _wrk_result(status, 200), f"{partial:.2f} of the static file", ">= 0.5",
         partial >= 0.5 and status["bad"] == 0),
        ("POST /bills/electricity (documented fields, unique keys)",
         f"{_wrk_result(post, 303)}; {created_per_second:.0f} payments created/s",
         f"{pay:.2f} of the dashboard's req/s", ">= 0.5", pay >= 0.5 and post["bad"] == 0),
        (f"GET / while {args.slow_clients} slow clients send a header line every 5 s "
         f"({len(latencies)} requests; slow connections opened {slow['opened']}, dropped by the server "
         f"{slow['dropped']})",
         f"p50 {percentile(latencies, 50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, failed: {len(failures)} "
         f"({', '.join(sorted(set(failures))) or 'none'})",
         "", "p99 <= 1 s, none failed", p99 <= 1 and not failures and len(latencies) > 0),
    ]


def measure_pipeline(args, stack, engine, users, csrfs, post, posts_since, concurrency) -> dict:
    """The vend backlog the POSTs left, drained; quiet and steady payments
    watched as a browser does."""
    print(f"draining the vend backlog ({int(post['ok'])} payments)", file=sys.stderr)
    stack.start("worker")
    wait_all_final(engine, timeout_seconds=post["ok"] / (concurrency / args.provider_delay) * 3 + 60)
    throughput, vended = vend_throughput(engine, posts_since)

    print("quiet: one payment at a time", file=sys.stderr)
    quiet = [users[i % len(users)].pay_and_watch(csrfs[i % len(users)]) for i in range(args.quiet_payments)]
    quiet_refs = [q["reference"] for q in quiet]
    recorded = finalized_at(engine, quiet_refs)

    print(f"steady: {args.steady_rate}/s for {args.steady_seconds} s", file=sys.stderr)
    steady = steady_load(users, csrfs, args.steady_rate, args.steady_seconds)
    steady_recorded = finalized_at(engine, [s["reference"] for s in steady])
    wait_all_final(engine, timeout_seconds=120)
    return {
        "throughput": throughput, "vended": vended,
        "quiet": quiet, "quiet_ttt": [q["seen"] - q["submitted"] for q in quiet],
        "quiet_lag": [q["seen"] - recorded[q["reference"]] for q in quiet],
        "quiet_queue": queue_latencies(engine, quiet_refs),
        "steady": steady, "steady_ttt": [s["seen"] - s["submitted"] for s in steady],
        "steady_lag": [s["seen"] - steady_recorded[s["reference"]] for s in steady],
        "steady_queue": queue_latencies(engine, [s["reference"] for s in steady]),
        "quiet_parts": breakdown(engine, quiet, args.provider_delay),
        "steady_parts": breakdown(engine, steady, args.provider_delay),
    }


def pipeline_rows(args, p: dict, concurrency: int, sqlite_queue: list[float]) -> list[tuple]:
    delay = args.provider_delay
    ideal = concurrency / delay
    quiet_ttt, quiet_lag, quiet_queue = p["quiet_ttt"], p["quiet_lag"], p["quiet_queue"]
    steady_ttt, steady_lag, steady_queue = p["steady_ttt"], p["steady_lag"], p["steady_queue"]
    return [
        (f"vends finished per second ({p['vended']} payments, {concurrency} at once, {delay:g} s provider)",
         f"{p['throughput']:.1f}/s (ideal {ideal:.0f}/s)", f"{p['throughput'] / ideal:.2f} of ideal", ">= 0.9",
         p["throughput"] / ideal >= 0.9),
        (f"time to token, quiet ({len(quiet_ttt)} payments, polling browser)",
         f"p50 {statistics.median(quiet_ttt):.2f} s, p95 {percentile(quiet_ttt, 95):.2f} s",
         f"p95 - delay = {percentile(quiet_ttt, 95) - delay:+.2f} s", f"<= {delay + 0.3:g} s",
         percentile(quiet_ttt, 95) <= delay + 0.3),
        ("  seen by the page after the worker recorded it, quiet",
         f"p50 {statistics.median(quiet_lag) * 1000:.0f} ms, p95 {percentile(quiet_lag, 95) * 1000:.0f} ms",
         "", "<= 0.3 s", percentile(quiet_lag, 95) <= 0.3),
        ("  queue latency, quiet, Redis (payment row built -> worker claim: includes the web's commit and enqueue)",
         f"p50 {statistics.median(quiet_queue) * 1000:.0f} ms, max {max(quiet_queue) * 1000:.0f} ms",
         "", "<= 100 ms", max(quiet_queue) <= 0.1),
        (f"time to token at {args.steady_rate:g} payments/s for {args.steady_seconds:g} s ({len(steady_ttt)} payments)",
         f"p50 {statistics.median(steady_ttt):.2f} s, p95 {percentile(steady_ttt, 95):.2f} s",
         f"p95 - delay = {percentile(steady_ttt, 95) - delay:+.2f} s", f"<= {delay + 1:g} s",
         percentile(steady_ttt, 95) <= delay + 1
         and len(steady_ttt) >= int(args.steady_rate * args.steady_seconds)),
        ("  seen by the page after the worker recorded it, steady",
         f"p50 {statistics.median(steady_lag) * 1000:.0f} ms, p95 {percentile(steady_lag, 95) * 1000:.0f} ms",
         "", "", True),
        ("  queue latency, steady (same measure)",
         f"p50 {statistics.median(steady_queue) * 1000:.0f} ms, p95 {percentile(steady_queue, 95) * 1000:.0f} ms",
         "", "", True),
        (f"queue latency on SqliteHuey, idle worker ({len(sqlite_queue)} payments, same measure)",
         f"p50 {statistics.median(sqlite_queue) * 1000:.0f} ms, max {max(sqlite_queue) * 1000:.0f} ms",
         "", "<= 500 ms", max(sqlite_queue) <= 0.5),
    ]


if __name__ == "__main__":
    sys.exit(main())
