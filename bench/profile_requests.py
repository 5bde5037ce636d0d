"""Where a request's time goes (issue 25): the cost of each per-request step
of an authenticated dashboard ``GET /``, a pay ``POST /bills/electricity`` and
a status poll answered at once (a final payment), through the Flask test
client on PostgreSQL (a database of its own on ``BENCH_DATABASE_URL``'s
server, created and dropped) and a private Redis, rate limits ON (as
production runs), JSON log lines written to ``/dev/null``.

Each step is timed by wrapping it (``time.perf_counter`` around the call):
every ``before_request`` / ``after_request`` / ``teardown_request`` hook
(Flask-Limiter's check, Talisman's CSP headers, Flask-WTF's CSRF check, the
request log line, the metrics timer...), the session interface's
``open_session`` / ``save_session``, Flask-Login's user loader, template
rendering, ``generate_csrf``; database round trips are counted and timed at
the DBAPI cursor (SQLAlchemy's ``before/after_cursor_execute`` events) plus
the pool's pre-ping and COMMIT/ROLLBACK; Redis round trips at
``redis.Redis.execute_command`` and pipelines. Steps nest (a template calls
``generate_csrf``; a session write is database time too), so the rows are
not meant to add up; ``total`` is the whole WSGI call.

Run: ``.venv/bin/python bench/profile_requests.py [--requests 300]
[--pyinstrument DIR]`` (with ``--pyinstrument``, a pyinstrument text profile
of each scenario is written to DIR, if pyinstrument is installed).
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import os
import re
import secrets
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import PrivateRedis  # noqa: E402

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')

#: step label -> [calls, seconds], for the scenario being measured.
TIMES: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
MEASURING = [False]


def timed(label: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not MEASURING[0]:
            return fn(*args, **kwargs)
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            slot = TIMES[label]
            slot[0] += 1
            slot[1] += time.perf_counter() - started

    return wrapper


def patch_classes() -> None:
    """Wrap what must be wrapped before the app is built."""
    import flask.templating
    import flask_wtf.csrf
    import redis.client

    from billvend.accounts import sessions

    sessions.ServerSessionInterface.open_session = timed(
        "session: open (lookup)", sessions.ServerSessionInterface.open_session)
    sessions.ServerSessionInterface.save_session = timed(
        "session: save (write)", sessions.ServerSessionInterface.save_session)
    flask_wtf.csrf.generate_csrf = timed("CSRF: generate token", flask_wtf.csrf.generate_csrf)
    flask.templating._render = timed("templates: render", flask.templating._render)  # noqa: SLF001
    redis.client.Redis.execute_command = timed("Redis: round trips", redis.client.Redis.execute_command)
    redis.client.Pipeline.execute = timed("Redis: round trips", redis.client.Pipeline.execute)


HOOK_LABELS = {
    "_check_request_limit": "Flask-Limiter: check",
    "__inject_headers": "Flask-Limiter: headers",
    "__release_context": "Flask-Limiter: release",
    "_set_response_headers": "Talisman: CSP and headers",
    "_force_https": "Talisman: https check",
    "_make_nonce": "Talisman: nonce",
    "csrf_protect": "CSRF: check (POST)",
    "_begin": "log: request id",
    "_finish": "log: JSON request line",
    "_start_timer": "metrics: start",
    "_observe": "metrics: histogram",
}


def patch_app(app) -> None:
    """Wrap the app's request hooks, its user loader and its engine."""
    from billvend.platform.extensions import csrf, db, login_manager

    for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        for key, funcs in registry.items():
            for i, fn in enumerate(funcs):
                name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "?")
                name = name.split("__")[-1] if name.startswith("_Limiter__") else name
                label = HOOK_LABELS.get(name) or HOOK_LABELS.get("__" + name) or f"hook: {name}"
                funcs[i] = timed(label, fn)
    csrf.protect = timed("CSRF: check (POST)", csrf.protect)
    login_manager._user_callback = timed("user: load (Flask-Login)", login_manager._user_callback)  # noqa: SLF001
    with app.app_context():
        engine = db.engine
    starts: dict[int, float] = {}

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        starts[id(cursor)] = time.perf_counter()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        started = starts.pop(id(cursor), None)
        if MEASURING[0] and os.environ.get("PROFILE_TRACE"):
            print("SQL:", " ".join(statement.split())[:1500], file=sys.stderr)
        if MEASURING[0] and started is not None:
            slot = TIMES["DB: statements"]
            slot[0] += 1
            slot[1] += time.perf_counter() - started

    dialect = engine.dialect
    dialect.do_ping = timed("DB: pool pre-ping", dialect.do_ping)
    dialect.do_commit = timed("DB: COMMIT", dialect.do_commit)
    dialect.do_rollback = timed("DB: ROLLBACK", dialect.do_rollback)
    if os.environ.get("PROFILE_TRACE"):
        import traceback
        rollback = dialect.do_rollback

        def traced(*a, **k):
            if MEASURING[0]:
                print("ROLLBACK from:", "".join(traceback.format_stack(limit=40)), file=sys.stderr)
            return rollback(*a, **k)
        dialect.do_rollback = traced


def run(client, label: str, n: int, request, profiler_dir) -> dict[str, list[float]]:
    for _ in range(20):
        request()  # warm up: caches, pools, compiled statements
    TIMES.clear()
    profiler = None
    if profiler_dir:
        try:
            from pyinstrument import Profiler
            profiler = Profiler(interval=0.0005)
            profiler.start()
        except ImportError:
            print("pyinstrument is not installed: no profile written", file=sys.stderr)
    MEASURING[0] = True
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(n):
        request()
    TIMES["total (whole request)"] = [n, time.perf_counter() - started]
    # CPU of this process only (PostgreSQL's and Redis's are not in it): what
    # a web process spends, however loaded the machine is.
    TIMES["total, CPU of this process"] = [n, time.process_time() - cpu_started]
    MEASURING[0] = False
    if profiler is not None:
        profiler.stop()
        path = Path(profiler_dir) / f"{label}.txt"
        path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        print(f"pyinstrument profile: {path}", file=sys.stderr)
    return {k: list(v) for k, v in TIMES.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--pyinstrument", metavar="DIR")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"))
    args = parser.parse_args()

    admin = sa.create_engine(args.database_url.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    name = f"billvend_profile_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    redis_server = PrivateRedis()
    try:
        return _profile(args, sa.engine.make_url(args.database_url).set(database=name)
                        .render_as_string(hide_password=False), redis_server.url)
    finally:
        redis_server.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _profile(args, database_url: str, redis_url: str) -> int:
    os.environ.update({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": secrets.token_hex(32),
        "SIMULATOR_DELAY_SECONDS": "0", "SIMULATOR_SUCCESS_RATE": "1", "LOG_FORMAT": "json",
        "FUNDING_GATEWAY": "simulated", "RATELIMIT_PAYMENT_USER": "100000 per minute",
    })
    from billvend.platform import logs

    # The JSON line is formatted and written as in production, to /dev/null.
    logging.getLogger().addHandler(logs.json_handler(open(os.devnull, "w")))
    logging.getLogger().setLevel(logging.INFO)
    patch_classes()
    from flask_migrate import upgrade

    from billvend import create_app
    from billvend.accounts.models import User
    from billvend.funding import seed
    from billvend.platform.extensions import db
    from billvend.platform.queue import huey
    from billvend.vending.models import Payment

    app = create_app()
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
    patch_app(app)
    huey.immediate = False
    client = app.test_client()
    email = f"profile-{uuid.uuid4().hex[:6]}@example.com"
    page = client.get("/signup").get_data(as_text=True)
    password = "correct horse battery 1"
    response = client.post("/signup", data={
        "csrf_token": CSRF_RE.search(page).group(1), "email": email, "full_name": "Profile",
        "phone": "08031234567", "password": password, "confirm_password": password})
    assert response.status_code in (200, 303), response.status_code
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == email))
        seed.fund_wallet(user, 1_000_000_00, secrets.token_urlsafe(16))
    csrf = CSRF_RE.search(client.get("/bills/electricity").get_data(as_text=True)).group(1)
    meter = "4500000000001"
    form = {"csrf_token": csrf, "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": meter}
    assert client.post("/bills/electricity/verify", data=form, headers={"HX-Request": "true"}).status_code == 200

    def pay():
        response = client.post("/bills/electricity", data={
            **form, "amount": "500", "phone": "08031234567", "idempotency_key": uuid.uuid4().hex})
        assert response.status_code == 303, response.status_code
        return response.headers["Location"].rsplit("/", 1)[1]

    reference = pay()
    with app.app_context():
        db.session.execute(sa.update(Payment).where(Payment.reference == reference).values(
            status="successful", token="12345678901234567890", finalized_at=sa.func.now()))
        db.session.commit()

    def dashboard():
        assert client.get("/").status_code == 200

    def status():
        assert client.get(f"/payments/{reference}/status", headers={"HX-Request": "true"}).status_code == 200

    def static():
        assert client.get("/static/js/app.js").status_code == 200

    n = args.requests
    results = {label: run(client, label, n, fn, args.pyinstrument) for label, fn in (
        ("dashboard", dashboard), ("pay", pay), ("status", status), ("static", static))}
    print_table(results, n)
    return 0


def print_table(results: dict[str, dict[str, list[float]]], n: int) -> None:
    labels: list[str] = []
    for times in results.values():
        for label in times:
            if label not in labels:
                labels.append(label)
    labels.sort(key=lambda label: (label.startswith("total"), label))
    print(f"\nper request, mean of {n} (ms; calls per request in brackets)\n")
    print("| step | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for label in labels:
        cells = []
        for times in results.values():
            calls, seconds = times.get(label, [0, 0.0])
            cells.append(f"{seconds / n * 1000:.2f} ({calls / n:g})" if calls else "")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
