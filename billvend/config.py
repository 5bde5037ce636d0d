"""Configuration from the environment.

This is the only module that reads ``os.environ`` (DESIGN.md, Configuration).
Every setting has a default that makes ``make run`` work with nothing set:
SQLite and SqliteHuey files in ``instance/``, the in-process simulated
vending provider, and htmx from the CDN (``make run`` points ``HTMX_URL`` at
the pinned local copy).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"

HTMX_VERSION = "2.0.11"
#: Subresource Integrity hash of ``htmx.org@2.0.11/dist/htmx.min.js`` as
#: published on npm; the local copy ``make`` installs is the same file, so the
#: same hash guards both.
HTMX_SRI = "sha384-2OatzQy1H+Zd/IIrjr1TcuDGqLXeHhbooAyJY1KdQMKnr4LZ22k31GBLdYKHmVjg"
HTMX_CDN_URL = f"https://cdn.jsdelivr.net/npm/htmx.org@{HTMX_VERSION}/dist/htmx.min.js"
HTMX_LOCAL_URL = "/static/vendor/htmx.min.js"


def _database_url(raw: str | None) -> str:
    """Normalise ``DATABASE_URL`` for SQLAlchemy.

    Heroku hands out ``postgres://`` URLs, which SQLAlchemy 2 rejects; we also
    pick the psycopg 3 driver explicitly. Empty means the embedded SQLite file.
    """
    if not raw:
        return f"sqlite:///{INSTANCE_DIR / 'billvend.sqlite3'}"
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix):]
    return raw


def _bool(raw: str | None, default: bool = False) -> bool:
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables.

    :param environ: the variables to read; ``os.environ`` when ``None``.
    :returns: a dict of upper-case config keys, ready for ``app.config.update``.
    :raises ValueError: when a numeric variable does not parse.
    """
    env = os.environ if environ is None else environ
    get = env.get
    database_url = _database_url(get("DATABASE_URL"))
    web_threads = int(get("WEB_THREADS") or 32)
    # Connections per process. Smaller than WEB_THREADS on purpose: a thread
    # holds a connection only while it runs queries, never across provider
    # I/O (DESIGN.md, Transactions) nor while a status long poll sleeps, and
    # one process runs Python on one core at a time. 6 per web process and 6
    # for the worker (the Procfile sets DATABASE_POOL_SIZE from
    # WORKER_DATABASE_POOL_SIZE for it) keep 2 web + 1 worker under the ~20
    # connections of small hosted plans (README, connection budget).
    pool_size = int(get("DATABASE_POOL_SIZE") or min(web_threads, 6))
    return {
        "SECRET_KEY": get("SECRET_KEY") or "dev-only-not-secret",
        "SQLALCHEMY_DATABASE_URI": database_url,
        # Survive a PostgreSQL restart: a dead pooled connection is replaced
        # before use instead of failing the request.
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url, pool_size),
        # Read by the Procfile's web line too; sizes long polls in flight.
        "WEB_THREADS": web_threads,
        "DATABASE_POOL_SIZE": pool_size,
        # Vends one worker process runs at once (Procfile ``worker``).
        "WORKER_CONCURRENCY": int(get("WORKER_CONCURRENCY") or 64),
        # Meter verification cache (billvend.meter_verification): how long a
        # valid answer, and a "no such meter" answer, are reused.
        "METER_VERIFICATION_TTL_SECONDS": int(get("METER_VERIFICATION_TTL_SECONDS") or 600),
        "METER_VERIFICATION_INVALID_TTL_SECONDS": int(get("METER_VERIFICATION_INVALID_TTL_SECONDS") or 60),
        # Hard wall-clock limit of one verification call made by a web request.
        "METER_VERIFICATION_DEADLINE_SECONDS": float(get("METER_VERIFICATION_DEADLINE_SECONDS") or 4.0),
        # The payment status long poll: how long one request may wait for a
        # change, and for how long after a payment is created the page
        # long-polls before backing off to plain polling.
        "STATUS_LONG_POLL_SECONDS": float(get("STATUS_LONG_POLL_SECONDS") or 5.0),
        "STATUS_FAST_PHASE_SECONDS": int(get("STATUS_FAST_PHASE_SECONDS") or 30),
        # /metrics: a bearer token; without one only loopback may scrape.
        "METRICS_TOKEN": get("METRICS_TOKEN") or None,
        # prometheus_client reads this itself (multiprocess mode); we read it
        # to pick the collector.
        "PROMETHEUS_MULTIPROC_DIR": get("PROMETHEUS_MULTIPROC_DIR") or None,
        # One JSON object per log line (python-json-logger); "text" for humans.
        "LOG_FORMAT": (get("LOG_FORMAT") or "json").lower(),
        "REDIS_URL": get("REDIS_URL") or None,
        "HUEY_NAME": get("HUEY_NAME") or "billvend",
        "HUEY_SQLITE_PATH": get("HUEY_SQLITE_PATH") or str(INSTANCE_DIR / "huey.sqlite3"),
        "HUEY_IMMEDIATE": _bool(get("HUEY_IMMEDIATE")),
        "VENDING_PROVIDER": get("VENDING_PROVIDER") or "simulated",
        "SIMULATOR_SUCCESS_RATE": float(get("SIMULATOR_SUCCESS_RATE") or 0.8),
        "SIMULATOR_DELAY_SECONDS": float(get("SIMULATOR_DELAY_SECONDS") or 2.0),
        "VTPASS_BASE_URL": get("VTPASS_BASE_URL") or "http://127.0.0.1:5055",
        "VTPASS_API_KEY": get("VTPASS_API_KEY") or "sandbox-api-key",
        "VTPASS_SECRET_KEY": get("VTPASS_SECRET_KEY") or "sandbox-secret-key",
        "VTPASS_CONNECT_TIMEOUT_SECONDS": float(get("VTPASS_CONNECT_TIMEOUT_SECONDS") or 5.0),
        "VTPASS_READ_TIMEOUT_SECONDS": float(get("VTPASS_READ_TIMEOUT_SECONDS") or 30.0),
        # Meter verification runs inside a web request: keep it well under
        # gunicorn's 30 s worker timeout.
        "VTPASS_VERIFY_TIMEOUT_SECONDS": float(get("VTPASS_VERIFY_TIMEOUT_SECONDS") or 10.0),
        # Tries of a request whose connection cannot even be opened.
        "VTPASS_SEND_ATTEMPTS": int(get("VTPASS_SEND_ATTEMPTS") or 3),
        # The sandbox server (billvend.sandbox): how long the timeout meter
        # keeps the client waiting; 0 means VTPASS_READ_TIMEOUT_SECONDS + 5.
        "SANDBOX_TIMEOUT_SLEEP_SECONDS": float(get("SANDBOX_TIMEOUT_SLEEP_SECONDS") or 0.0),
        "HTMX_URL": get("HTMX_URL") or HTMX_CDN_URL,
        "HTMX_SRI": HTMX_SRI,
        # Payment recovery timings (seconds); see DESIGN.md, Vending.
        "SWEEP_INTERVAL_SECONDS": int(get("SWEEP_INTERVAL_SECONDS") or 60),
        "PENDING_GRACE_SECONDS": int(get("PENDING_GRACE_SECONDS") or 120),
        "VENDING_LEASE_SECONDS": int(get("VENDING_LEASE_SECONDS") or 300),
        "REQUERY_BASE_DELAY_SECONDS": float(get("REQUERY_BASE_DELAY_SECONDS") or 5.0),
        "REQUERY_MAX_DELAY_SECONDS": float(get("REQUERY_MAX_DELAY_SECONDS") or 600.0),
        "UNKNOWN_ALERT_AGE_SECONDS": int(get("UNKNOWN_ALERT_AGE_SECONDS") or 3600),
        # Test-only fault injection: die between commit and enqueue.
        "FAULT_SKIP_ENQUEUE": _bool(get("FAULT_SKIP_ENQUEUE")),
        # Money limits, in kobo.
        "MIN_FUNDING_KOBO": 100_00,
        "MAX_FUNDING_KOBO": 1_000_000_00,
        "MIN_PAYMENT_KOBO": 500_00,
        "MAX_PAYMENT_KOBO": 500_000_00,
        "PAYMENTS_PER_PAGE": 20,
    }


def _engine_options(database_url: str, pool_size: int) -> dict[str, Any]:
    """SQLAlchemy engine options: a queue pool of exactly ``pool_size``
    connections (no overflow, so the connection budget is a sum of pool
    sizes; a thread waits up to 30 s for one), checked before use so a
    PostgreSQL restart does not fail a request. An in-memory SQLite database
    keeps SQLAlchemy's single-connection pool."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    if database_url.startswith("sqlite") and (":memory:" in database_url or database_url.rstrip("/") == "sqlite:"):
        return options
    options.update(pool_size=pool_size, max_overflow=0, pool_timeout=30)
    return options


def longest_vend_seconds(config: Mapping[str, Any]) -> float:
    """The longest one ``vend`` call can take with this configuration.

    VTpass: every connection attempt may use its whole connect timeout (plus
    the pause between attempts), then the read timeout; the simulator: its
    delay.
    """
    if config["VENDING_PROVIDER"] == "vtpass":
        attempts = config["VTPASS_SEND_ATTEMPTS"]
        return (attempts * (config["VTPASS_CONNECT_TIMEOUT_SECONDS"] + 1.0)
                + config["VTPASS_READ_TIMEOUT_SECONDS"])
    return config["SIMULATOR_DELAY_SECONDS"]


def check_timings(config: Mapping[str, Any]) -> None:
    """Refuse a configuration whose vending lease could expire while a
    ``pay`` call is still in flight: the sweep would requery too early, hear
    "no such order" and refund a payment that is about to be delivered.

    :raises ValueError: ``VENDING_LEASE_SECONDS`` is not longer than
        :func:`longest_vend_seconds`.
    """
    longest = longest_vend_seconds(config)
    if config["VENDING_LEASE_SECONDS"] <= longest:
        raise ValueError(
            f"VENDING_LEASE_SECONDS ({config['VENDING_LEASE_SECONDS']}) must be longer than the "
            f"longest vend call ({longest:g} s with {config['VENDING_PROVIDER']})")
