"""Configuration from the environment.

This is the only module that reads ``os.environ`` (DESIGN.md, Configuration).
Every setting has a default that makes ``make run`` work with nothing set:
SQLite and SqliteHuey files in ``instance/``, the in-process simulated
vending provider, and htmx from the CDN (``make run`` points ``HTMX_URL`` at
the pinned local copy).
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"

HTMX_VERSION = "2.0.11"
#: Subresource Integrity hash of ``htmx.org@2.0.11/dist/htmx.min.js`` as
#: published on npm; the local copy ``make`` installs is the same file, so the
#: same hash guards both.
HTMX_SRI = "sha384-2OatzQy1H+Zd/IIrjr1TcuDGqLXeHhbooAyJY1KdQMKnr4LZ22k31GBLdYKHmVjg"
HTMX_CDN_URL = f"https://cdn.jsdelivr.net/npm/htmx.org@{HTMX_VERSION}/dist/htmx.min.js"
HTMX_LOCAL_URL = "/static/vendor/htmx.min.js"

DEVELOPMENT = "development"
PRODUCTION = "production"
#: Where the embedded default keeps the key it generated on first start.
SECRET_KEY_FILE = INSTANCE_DIR / "secret_key"
#: A SECRET_KEY shorter than this is refused wherever a strong one is required
#: (32 characters of ``secrets.token_hex`` carry 128 bits).
MIN_SECRET_KEY_LENGTH = 32
#: ... and so is one whose estimated entropy (:func:`secret_key_bits`) is less.
MIN_SECRET_KEY_BITS = 128
#: Keys that have been public (shipped defaults, examples, test values).
KNOWN_WEAK_SECRET_KEYS = frozenset({
    "dev-only-not-secret", "dev", "development", "secret", "secret-key", "changeme",
    "change-me", "test-secret", "stack-test", "your-secret-key", "flask-secret",
})
#: The sandboxes' default credentials (billvend.sandbox); production refuses them.
VTPASS_SANDBOX_API_KEY = "sandbox-api-key"
VTPASS_SANDBOX_SECRET_KEY = "sandbox-secret-key"
PAYSTACK_SANDBOX_SECRET_KEY = "sk_test_billvend_sandbox"
PAYSTACK_SANDBOX_BASE_URL = "http://127.0.0.1:5055"


class ConfigError(RuntimeError):
    """The configuration is unsafe or inconsistent; the message is one line
    saying what to change. ``wsgi.py`` turns it into a clean exit."""


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


def _seconds_list(raw: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
    """``"3600,86400"`` -> ``(3600.0, 86400.0)``, ascending; ``default``
    when unset.

    :raises ConfigError: a value that is not a number, or is negative.
    """
    if raw is None or not raw.strip():
        return default
    try:
        values = tuple(sorted(float(part) for part in raw.split(",") if part.strip()))
    except ValueError:
        raise ConfigError(f"expected comma-separated seconds, got {raw!r}") from None
    if any(value < 0 or value != value for value in values):
        raise ConfigError(f"seconds must not be negative: {raw!r}")
    return values


def _int(raw: str | None, default: int | None) -> int | None:
    return default if raw is None or raw.strip() == "" else int(raw)


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables.

    :param environ: the variables to read; ``os.environ`` when ``None``.
    :returns: a dict of upper-case config keys, ready for ``app.config.update``.
    :raises ValueError: when a numeric variable does not parse, or
        ``FUNDING_GATEWAY`` names no gateway.
    """
    env = os.environ if environ is None else environ
    get = env.get
    database_url = _database_url(get("DATABASE_URL"))
    if (get("FUNDING_GATEWAY") or "paystack") not in ("paystack", "simulated"):
        raise ValueError(f"FUNDING_GATEWAY must be paystack or simulated, not {get('FUNDING_GATEWAY')!r}")
    environment = (get("BILLVEND_ENV") or DEVELOPMENT).strip().lower()
    if environment not in {DEVELOPMENT, PRODUCTION}:
        raise ValueError(f"BILLVEND_ENV must be {DEVELOPMENT} or {PRODUCTION}, not {environment!r}")
    production = environment == PRODUCTION
    ratelimit_storage = get("RATELIMIT_STORAGE_URI") or get("REDIS_URL") or "memory://"
    public_base_url = (get("PUBLIC_BASE_URL") or "").strip().rstrip("/") or None
    trusted_hosts = [h.strip() for h in (get("TRUSTED_HOSTS") or "").split(",") if h.strip()] or None
    if trusted_hosts is None and production and public_base_url:
        # Production answers only to its own name: a request naming another
        # Host (a poisoned link, a cache keyed by Host) gets a 400.
        trusted_hosts = [urlsplit(public_base_url).hostname or ""]
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
        "BILLVEND_ENV": environment,
        # None until create_app resolves it (resolve_secret_key): never a
        # shipped default, which anyone could use to sign a session.
        "SECRET_KEY": get("SECRET_KEY") or None,
        # A deployed topology (a database or Redis of its own, or production)
        # must be given a strong key: its processes cannot share a generated one.
        "REQUIRE_SECRET_KEY": production or bool(get("DATABASE_URL")) or bool(get("REDIS_URL")),
        # Proxies in front whose X-Forwarded-For/-Proto are believed. Locally
        # nothing sits in front (0); production must say (None until it
        # does: check_production refuses it), since a guess of 1 without a
        # proxy lets a forged X-Forwarded-For pick the rate limits' address.
        "TRUSTED_PROXY_HOPS": _int(get("TRUSTED_PROXY_HOPS"), None if production else 0),
        # Where customers reach billvend (``https://billvend.ng``): every
        # absolute URL billvend gives out is built from it, never from the
        # request's Host header (billvend.web.security.external_url).
        "PUBLIC_BASE_URL": public_base_url,
        # Flask refuses (400) a request for any other host; from
        # TRUSTED_HOSTS (comma-separated), else PUBLIC_BASE_URL's host in
        # production, else any host.
        "TRUSTED_HOSTS": trusted_hosts,
        # Request limits (bytes): a whole request body, and the urlencoded
        # or non-file multipart form data Werkzeug keeps in memory.
        "MAX_CONTENT_LENGTH": _int(get("MAX_CONTENT_LENGTH"), 1024 * 1024),
        "MAX_FORM_MEMORY_SIZE": _int(get("MAX_FORM_MEMORY_SIZE"), 64 * 1024),
        "MAX_FORM_PARTS": _int(get("MAX_FORM_PARTS"), 200),
        # Cookies: never readable by scripts, not sent on cross-site POSTs,
        # HTTPS-only in production.
        "SESSION_COOKIE_NAME": "session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_NAME": "remember",
        # Session lifetimes (seconds); see billvend/accounts/sessions.py.
        "ADMIN_SESSION_IDLE_SECONDS": _int(get("ADMIN_SESSION_IDLE_SECONDS"), 30 * 60),
        "ADMIN_SESSION_ABSOLUTE_SECONDS": _int(get("ADMIN_SESSION_ABSOLUTE_SECONDS"), 12 * 3600),
        "CUSTOMER_SESSION_IDLE_SECONDS": _int(get("CUSTOMER_SESSION_IDLE_SECONDS"), 24 * 3600),
        "CUSTOMER_SESSION_ABSOLUTE_SECONDS": _int(get("CUSTOMER_SESSION_ABSOLUTE_SECONDS"), 7 * 24 * 3600),
        "REMEMBER_ME_SECONDS": _int(get("REMEMBER_ME_SECONDS"), 30 * 24 * 3600),
        "ANONYMOUS_SESSION_SECONDS": _int(get("ANONYMOUS_SESSION_SECONDS"), 2 * 3600),
        # A form's CSRF token lives as long as its server-side session (whose
        # deadlines are above), not Flask-WTF's extra hour: a pay form left
        # open over lunch still submits; a session that ended takes it along.
        "WTF_CSRF_TIME_LIMIT": None,
        # How long a password entry counts as "fresh" for money-sensitive
        # account changes (password, second factor).
        "FRESH_LOGIN_SECONDS": _int(get("FRESH_LOGIN_SECONDS"), 10 * 60),
        "MIN_PASSWORD_LENGTH": 10,
        # Flask-Limiter: Redis when REDIS_URL is set (shared by every worker
        # and dyno), memory otherwise. Limits use the `limits` notation
        # ("5 per minute;20 per hour"); RATELIMIT_ENABLED=false is for load
        # benchmarks only.
        "RATELIMIT_ENABLED": _bool(get("RATELIMIT_ENABLED"), True),
        "RATELIMIT_STORAGE_URI": ratelimit_storage,
        # Redis down or unreachable: count in this process's memory until it
        # is back (limits stay, per process) instead of failing the request;
        # a partition must not hang a request either.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_STORAGE_OPTIONS": ({"socket_connect_timeout": 2, "socket_timeout": 2}
                                      if ratelimit_storage.startswith(("redis://", "rediss://")) else {}),
        "RATELIMIT_KEY_PREFIX": get("RATELIMIT_KEY_PREFIX") or "billvend",
        "RATELIMIT_STRATEGY": "moving-window",
        "RATELIMIT_LOGIN_ACCOUNT_IP": get("RATELIMIT_LOGIN_ACCOUNT_IP") or "5 per minute;20 per hour",
        "RATELIMIT_LOGIN_IP": get("RATELIMIT_LOGIN_IP") or "30 per minute;300 per hour",
        "RATELIMIT_LOGIN_ACCOUNT": get("RATELIMIT_LOGIN_ACCOUNT") or "10 per 15 minutes;50 per day",
        "RATELIMIT_SIGNUP_IP": get("RATELIMIT_SIGNUP_IP") or "5 per minute;30 per hour",
        "RATELIMIT_VERIFY_USER": get("RATELIMIT_VERIFY_USER") or "20 per minute;200 per day",
        "RATELIMIT_VERIFY_IP": get("RATELIMIT_VERIFY_IP") or "60 per minute;600 per day",
        "RATELIMIT_VERIFY_DISTINCT_METERS": get("RATELIMIT_VERIFY_DISTINCT_METERS") or "20 per hour",
        "RATELIMIT_PAYMENT_USER": get("RATELIMIT_PAYMENT_USER") or "10 per minute;200 per day",
        "RATELIMIT_FUNDING_USER": get("RATELIMIT_FUNDING_USER") or "10 per minute;100 per day",
        "RATELIMIT_TWO_FACTOR": get("RATELIMIT_TWO_FACTOR") or "5 per minute;30 per hour",
        "RATELIMIT_PASSWORD_RESET_EMAIL": get("RATELIMIT_PASSWORD_RESET_EMAIL") or "3 per hour;10 per day",
        "RATELIMIT_WEBHOOK_IP": get("RATELIMIT_WEBHOOK_IP") or "600 per minute",
        # Production refuses the gateway's sandbox defaults (check_production),
        # and the CSP lets forms post to the gateway's checkout. Where the gateway's checkout page lives when it is not on
        # PAYSTACK_BASE_URL's origin (Paystack: https://checkout.paystack.com).
        "PAYSTACK_CHECKOUT_URL": get("PAYSTACK_CHECKOUT_URL") or None,
        "SQLALCHEMY_DATABASE_URI": database_url,
        # Survive a PostgreSQL restart: a dead pooled connection is replaced
        # before use instead of failing the request.
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url, pool_size),
        # Read by the Procfile's web line too; sizes long polls in flight.
        "WEB_THREADS": web_threads,
        "DATABASE_POOL_SIZE": pool_size,
        # Vends one worker process runs at once (Procfile ``worker``).
        "WORKER_CONCURRENCY": int(get("WORKER_CONCURRENCY") or 64),
        # Meter verification cache (billvend.vending.meter_verification): how long a
        # valid answer, and a "no such meter" answer, are reused.
        "METER_VERIFICATION_TTL_SECONDS": int(get("METER_VERIFICATION_TTL_SECONDS") or 600),
        "METER_VERIFICATION_INVALID_TTL_SECONDS": int(get("METER_VERIFICATION_INVALID_TTL_SECONDS") or 60),
        # Hard wall-clock limit of one verification call made by a web request.
        "METER_VERIFICATION_DEADLINE_SECONDS": float(get("METER_VERIFICATION_DEADLINE_SECONDS") or 4.0),
        # The payment status long poll: how long one request may wait for a
        # change, and for how long after a payment is created the page
        # long-polls before backing off to plain polling.
        "STATUS_LONG_POLL_SECONDS": float(get("STATUS_LONG_POLL_SECONDS") or 5.0),
        # Long polls one user may have waiting at once in one web process
        # (each holds a thread); past it, their panel polls every 3 s.
        "STATUS_LONG_POLLS_PER_USER": int(get("STATUS_LONG_POLLS_PER_USER") or 4),
        "STATUS_FAST_PHASE_SECONDS": int(get("STATUS_FAST_PHASE_SECONDS") or 30),
        # /metrics: a bearer token; without one only loopback may scrape.
        "METRICS_TOKEN": get("METRICS_TOKEN") or None,
        # prometheus_client reads this itself (multiprocess mode); we read it
        # to pick the collector.
        "PROMETHEUS_MULTIPROC_DIR": get("PROMETHEUS_MULTIPROC_DIR") or None,
        # One JSON object per log line (python-json-logger) in production;
        # "text", one readable line, in development (billvend.platform.logs).
        "LOG_FORMAT": (get("LOG_FORMAT") or ("json" if production else "text")).lower(),
        "REDIS_URL": get("REDIS_URL") or None,
        "HUEY_NAME": get("HUEY_NAME") or "billvend",
        "HUEY_SQLITE_PATH": get("HUEY_SQLITE_PATH") or str(INSTANCE_DIR / "huey.sqlite3"),
        "HUEY_IMMEDIATE": _bool(get("HUEY_IMMEDIATE")),
        "VENDING_PROVIDER": get("VENDING_PROVIDER") or "simulated",
        "SIMULATOR_SUCCESS_RATE": float(get("SIMULATOR_SUCCESS_RATE") or 0.8),
        "SIMULATOR_DELAY_SECONDS": float(get("SIMULATOR_DELAY_SECONDS") or 2.0),
        "VTPASS_BASE_URL": get("VTPASS_BASE_URL") or "http://127.0.0.1:5055",
        "VTPASS_API_KEY": get("VTPASS_API_KEY") or VTPASS_SANDBOX_API_KEY,
        "VTPASS_SECRET_KEY": get("VTPASS_SECRET_KEY") or VTPASS_SANDBOX_SECRET_KEY,
        "VTPASS_CONNECT_TIMEOUT_SECONDS": float(get("VTPASS_CONNECT_TIMEOUT_SECONDS") or 5.0),
        "VTPASS_READ_TIMEOUT_SECONDS": float(get("VTPASS_READ_TIMEOUT_SECONDS") or 30.0),
        # Meter verification runs inside a web request: keep it well under
        # gunicorn's 30 s worker timeout.
        "VTPASS_VERIFY_TIMEOUT_SECONDS": float(get("VTPASS_VERIFY_TIMEOUT_SECONDS") or 10.0),
        # Tries of a request whose connection cannot even be opened.
        "VTPASS_SEND_ATTEMPTS": int(get("VTPASS_SEND_ATTEMPTS") or 3),
        # The hard wall-clock deadline of one whole pay or requery call (name
        # lookup, every connection attempt, a slow-dripping body); 0 means
        # what longest_vend_seconds computes (see vend_deadline_seconds).
        "VTPASS_DEADLINE_SECONDS": float(get("VTPASS_DEADLINE_SECONDS") or 0.0),
        # The sandbox server (billvend.sandbox): how long the timeout meter
        # keeps the client waiting; 0 means VTPASS_READ_TIMEOUT_SECONDS + 5.
        "SANDBOX_TIMEOUT_SLEEP_SECONDS": float(get("SANDBOX_TIMEOUT_SLEEP_SECONDS") or 0.0),
        # The sandbox's drip meter: how long its pay answer takes in all (0:
        # VENDING_LEASE_SECONDS + 5) and the gap between its pieces (0: half
        # of VTPASS_READ_TIMEOUT_SECONDS, so no single read times out).
        "SANDBOX_DRIP_SECONDS": float(get("SANDBOX_DRIP_SECONDS") or 0.0),
        "SANDBOX_DRIP_INTERVAL_SECONDS": float(get("SANDBOX_DRIP_INTERVAL_SECONDS") or 0.0),
        # Where the sandbox server keeps its state (accounts, checkouts,
        # orders) across restarts; "none" keeps it in memory only.
        "SANDBOX_STATE_PATH": get("SANDBOX_STATE_PATH") or str(INSTANCE_DIR / "sandbox-state.json"),
        # The sandbox's late-record meter: requery says 015 this long after pay.
        "SANDBOX_LATE_RECORD_SECONDS": float(get("SANDBOX_LATE_RECORD_SECONDS") or 30.0),
        "HTMX_URL": get("HTMX_URL") or HTMX_CDN_URL,
        "HTMX_SRI": HTMX_SRI,
        # Payment recovery timings (seconds); see DESIGN.md, Vending.
        "SWEEP_INTERVAL_SECONDS": int(get("SWEEP_INTERVAL_SECONDS") or 60),
        "PENDING_GRACE_SECONDS": int(get("PENDING_GRACE_SECONDS") or 120),
        "VENDING_LEASE_SECONDS": int(get("VENDING_LEASE_SECONDS") or 300),
        "REQUERY_BASE_DELAY_SECONDS": float(get("REQUERY_BASE_DELAY_SECONDS") or 5.0),
        "REQUERY_MAX_DELAY_SECONDS": float(get("REQUERY_MAX_DELAY_SECONDS") or 600.0),
        "UNKNOWN_ALERT_AGE_SECONDS": int(get("UNKNOWN_ALERT_AGE_SECONDS") or 3600),
        # A payment refunded while its outcome was uncertain (on "never
        # received", or an admin's refund of an unknown payment) is requeried
        # again this long after the refund, once per delay (comma-separated
        # seconds; 1 h and 24 h by default): a delivery found then is flagged
        # delivered_after_refund for an admin.
        "REQUERY_AFTER_REFUND_DELAYS_SECONDS": _seconds_list(
            get("REQUERY_AFTER_REFUND_DELAYS_SECONDS"), (3600.0, 86400.0)),
        # A "never received" requery answer (VTpass 015) is believed only this
        # long after a pay could last have been in flight.
        "PROVIDER_NOT_FOUND_GRACE_SECONDS": float(get("PROVIDER_NOT_FOUND_GRACE_SECONDS") or 120.0),
        # The sweep's lease: one sweeper at a time; expires if its holder dies.
        # A sweep only enqueues tasks, so a minute is ample; an overlap with a
        # slow sweep is harmless (every step claims its payment).
        "SWEEP_LOCK_SECONDS": int(get("SWEEP_LOCK_SECONDS") or 60),
        # The payment page says "the disco is slow" after this long.
        "SLOW_PAYMENT_NOTICE_SECONDS": int(get("SLOW_PAYMENT_NOTICE_SECONDS") or 30),
        # Whom a customer contacts about a payment still unresolved after
        # UNKNOWN_ALERT_AGE_SECONDS (shown with the reference to quote).
        "SUPPORT_CONTACT": get("SUPPORT_CONTACT") or "support@billvend.ng or 0201 888 0000",
        # Test-only fault injection: die between commit and enqueue.
        "FAULT_SKIP_ENQUEUE": _bool(get("FAULT_SKIP_ENQUEUE")),
        # Money in (issue 15): the gateway, and Paystack's API (its sandbox
        # in billvend.sandbox by default; Paystack's test or live mode when
        # the base URL and keys point there).
        "FUNDING_GATEWAY": get("FUNDING_GATEWAY") or "paystack",
        "PAYSTACK_BASE_URL": (get("PAYSTACK_BASE_URL") or PAYSTACK_SANDBOX_BASE_URL).rstrip("/"),
        "PAYSTACK_SECRET_KEY": get("PAYSTACK_SECRET_KEY") or PAYSTACK_SANDBOX_SECRET_KEY,
        "PAYSTACK_PUBLIC_KEY": get("PAYSTACK_PUBLIC_KEY") or "pk_test_billvend_sandbox",
        # Where the sandbox sends its webhooks (the sandbox only reads it).
        "PAYSTACK_WEBHOOK_URL": get("PAYSTACK_WEBHOOK_URL")
        or f"http://127.0.0.1:{get('PORT') or 5000}/webhooks/paystack",
        "PAYSTACK_CONNECT_TIMEOUT_SECONDS": float(get("PAYSTACK_CONNECT_TIMEOUT_SECONDS") or 5.0),
        "PAYSTACK_READ_TIMEOUT_SECONDS": float(get("PAYSTACK_READ_TIMEOUT_SECONDS") or 10.0),
        # The whole call, wall clock, whatever the socket does (a web
        # request waits for initialize and verify).
        "PAYSTACK_DEADLINE_SECONDS": float(get("PAYSTACK_DEADLINE_SECONDS") or 12.0),
        # The bank a dedicated account is opened at (Paystack's test bank).
        "PAYSTACK_PREFERRED_BANK": get("PAYSTACK_PREFERRED_BANK") or "test-bank",
        # An open funding this old is verified again by the funding sweep,
        # then with exponential backoff between these bounds.
        "FUNDING_VERIFY_AFTER_SECONDS": int(get("FUNDING_VERIFY_AFTER_SECONDS") or 180),
        "FUNDING_VERIFY_BASE_DELAY_SECONDS": float(get("FUNDING_VERIFY_BASE_DELAY_SECONDS") or 60.0),
        "FUNDING_VERIFY_MAX_DELAY_SECONDS": float(get("FUNDING_VERIFY_MAX_DELAY_SECONDS") or 3600.0),
        # A checkout the gateway still has never heard of after this long
        # (initialize never reached it) ends failed.
        "FUNDING_GIVE_UP_SECONDS": int(get("FUNDING_GIVE_UP_SECONDS") or 3600),
        # A funding the gateway still gives no final answer about after this
        # long is closed as failed (nothing was credited; a late success
        # still credits it through the webhook or the reconciliation).
        "FUNDING_EXPIRE_SECONDS": int(get("FUNDING_EXPIRE_SECONDS") or 86400),
        # The nightly reconciliation covers this many days, yesterday last
        # (a checkout is listed under the day it began, whenever it is paid).
        "FUNDING_RECONCILE_DAYS": int(get("FUNDING_RECONCILE_DAYS") or 2),
        # Largest webhook body accepted (bytes); bigger gets 413 unread.
        "WEBHOOK_MAX_BYTES": int(get("WEBHOOK_MAX_BYTES") or 65536),
        # The Paystack sandbox's webhook timing: normal, late, twice,
        # before_redirect or never; late waits this long.
        "PAYSTACK_SANDBOX_WEBHOOK": get("PAYSTACK_SANDBOX_WEBHOOK") or "normal",
        "PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS": float(get("PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS") or 5.0),
        # ... and reports a checkout unanswered this long as abandoned.
        "PAYSTACK_SANDBOX_ABANDON_SECONDS": float(get("PAYSTACK_SANDBOX_ABANDON_SECONDS") or 1800.0),
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


def vend_deadline_seconds(config: Mapping[str, Any]) -> float:
    """The hard wall-clock deadline of one provider call (``pay`` or
    ``requery``), enforced by the client: ``VTPASS_DEADLINE_SECONDS`` for
    VTpass (default: :func:`longest_vend_seconds`), the simulator's delay for
    the simulator."""
    if config["VENDING_PROVIDER"] == "vtpass" and config.get("VTPASS_DEADLINE_SECONDS"):
        return float(config["VTPASS_DEADLINE_SECONDS"])
    return float(longest_vend_seconds(config))


def check_timings(config: Mapping[str, Any]) -> None:
    """Refuse a configuration whose vending lease could expire while a
    ``pay`` call is still in flight: the sweep would requery too early, hear
    "no such order" and refund a payment that is about to be delivered.

    :raises ValueError: ``VENDING_LEASE_SECONDS`` is not longer than
        :func:`vend_deadline_seconds`, or a timing is negative.
    """
    longest = vend_deadline_seconds(config)
    if config["VENDING_LEASE_SECONDS"] <= longest:
        raise ValueError(
            f"VENDING_LEASE_SECONDS ({config['VENDING_LEASE_SECONDS']}) must be longer than the "
            f"longest vend call ({longest:g} s with {config['VENDING_PROVIDER']})")
    for name in ("VTPASS_DEADLINE_SECONDS", "PROVIDER_NOT_FOUND_GRACE_SECONDS"):
        if config.get(name, 0) < 0:
            raise ValueError(f"{name} must not be negative")
    if config.get("SWEEP_LOCK_SECONDS", 1) < 1:
        raise ValueError("SWEEP_LOCK_SECONDS must be at least 1")


def secret_key_bits(key: str) -> float:
    """The estimated entropy of ``key`` in bits: its length times log2 of
    the number of distinct characters it uses (an upper bound for a random
    key over that alphabet; ``secrets.token_hex(32)`` gives 256,
    ``"abcdefgh" * 4`` gives 96)."""
    distinct = len(set(key))
    return len(key) * math.log2(distinct) if distinct > 1 else 0.0


def weak_secret_key_reason(key: str | None) -> str | None:
    """Why ``key`` is not a strong SECRET_KEY, or ``None`` when it is.

    Strong means at least :data:`MIN_SECRET_KEY_LENGTH` characters, not a key
    that has ever been published (:data:`KNOWN_WEAK_SECRET_KEYS`), and at
    least :data:`MIN_SECRET_KEY_BITS` by :func:`secret_key_bits`.
    """
    if not key:
        return "SECRET_KEY is not set"
    if key.strip().lower() in KNOWN_WEAK_SECRET_KEYS:
        return "SECRET_KEY is a published default"
    if len(key) < MIN_SECRET_KEY_LENGTH:
        return f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters"
    bits = secret_key_bits(key)
    if bits < MIN_SECRET_KEY_BITS:
        return (f"SECRET_KEY carries about {bits:.0f} bits (length x log2 of its distinct characters), "
                f"under {MIN_SECRET_KEY_BITS} bits")
    return None


def resolve_secret_key(config: dict[str, Any]) -> None:
    """Set ``config["SECRET_KEY"]``: the configured key, checked; or, on the
    embedded default only, a random key generated into ``instance/`` on first
    start and read back on every later start (web and worker share it).

    :raises ConfigError: a deployed topology (``REQUIRE_SECRET_KEY``: a
        ``DATABASE_URL``, a ``REDIS_URL`` or ``BILLVEND_ENV=production``) has no
        SECRET_KEY or a weak one (:func:`weak_secret_key_reason`).
    """
    key = config.get("SECRET_KEY")
    if config.get("REQUIRE_SECRET_KEY"):
        reason = weak_secret_key_reason(key)
        if reason:
            raise ConfigError(
                f"{reason}; set SECRET_KEY to a random value of {MIN_SECRET_KEY_LENGTH}+ characters, "
                "e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
        return
    if key:
        return
    config["SECRET_KEY"] = _instance_secret_key()


def _instance_secret_key() -> str:
    SECRET_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when web and worker start together, one creates the file
        # and the other reads what it wrote.
        fd = os.open(SECRET_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = SECRET_KEY_FILE.read_text().strip()
            if key:
                return key
            import time

            time.sleep(0.05)
        raise ConfigError(f"{SECRET_KEY_FILE} is empty; delete it to generate a new key")
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


#: Host names that mean this machine without asking a resolver (RFC 6761
#: reserves ``localhost`` and every name under it; Debian's /etc/hosts
#: adds the others).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
#: The outside systems' base URLs and the public one: production refuses a
#: loopback address in any of them.
BASE_URL_SETTINGS = ("VTPASS_BASE_URL", "PAYSTACK_BASE_URL", "PAYSTACK_CHECKOUT_URL", "PUBLIC_BASE_URL")
#: Of those, the ones that must be https:// in production (all of them:
#: provider and gateway keys and the customers' cookies travel over them).
HTTPS_SETTINGS = BASE_URL_SETTINGS


def _loopback_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_loopback or address.is_unspecified


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (a URL's host, brackets removed) names this machine.

    Names are never resolved (a build may be offline, and DNS can change
    after the check): ``localhost``, any name under ``.localhost`` and
    :data:`LOOPBACK_NAMES`, with or without the trailing dot. IP literals
    are read as the C library reads them (``inet_aton``: ``127.1``,
    ``2130706433``, ``0x7f.1``, octal ``0177.0.0.1``) and as IPv6 (``::1``,
    ``::ffff:127.0.0.1``); loopback and the unspecified address (``0.0.0.0``,
    ``::``, which connects to this machine) count.
    """
    host = unquote(host or "").strip().lower()
    name = host.rstrip(".")
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return _loopback_address(ipaddress.IPv6Address(host.split("%", 1)[0]))
    except ValueError:
        pass
    if not name or "/" in name:
        return False
    try:
        packed = socket.inet_aton(name)
    except (OSError, ValueError):
        return False
    return _loopback_address(ipaddress.IPv4Address(packed))


def is_loopback_url(url: str | None) -> bool:
    """True when ``url``'s host is loopback (:func:`is_loopback_host`)."""
    try:
        host = urlsplit(url or "").hostname or ""
    except ValueError:
        return False
    return is_loopback_host(host)


def _base_url_problem(name: str, url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return f"{name} is not a URL"
    if not parts.hostname:
        return f"{name} must be an https:// URL with a host, not {url!r}"
    if is_loopback_host(parts.hostname):
        return f"refuses a loopback {name} ({parts.hostname}: this machine, e.g. a sandbox)"
    if parts.scheme != "https" and name in HTTPS_SETTINGS:
        return f"{name} must be an https:// URL, not {url!r}"
    return None


def check_production(config: Mapping[str, Any]) -> None:
    """Refuse a production configuration that still points at a stand-in or
    leaves a door open.

    With ``BILLVEND_ENV=production``: no simulated provider or gateway; no
    sandbox default key (VTpass's, the Paystack sandbox's, or any Paystack
    ``sk_test_`` key); every base URL (:data:`BASE_URL_SETTINGS`) https://
    and not loopback in any spelling; ``PUBLIC_BASE_URL`` set, to an origin
    only; rate limits on and shared (Redis, not process memory);
    ``TRUSTED_PROXY_HOPS`` stated; a SECRET_KEY of at least
    :data:`MIN_SECRET_KEY_BITS` (:func:`weak_secret_key_reason`).
    Development (the default) allows all of them: tests and staging run the
    deployed topology against the simulator and the sandboxes.

    :raises ConfigError: one line naming the first offending variable.
    """
    if config.get("BILLVEND_ENV") != PRODUCTION:
        return
    prefix = "BILLVEND_ENV=production"
    reason = weak_secret_key_reason(config.get("SECRET_KEY"))
    if reason:
        raise ConfigError(f"{prefix}: {reason}; set SECRET_KEY to e.g. "
                          "python -c 'import secrets; print(secrets.token_hex(32))'")
    if config["VENDING_PROVIDER"] == "simulated":
        raise ConfigError(f"{prefix} refuses VENDING_PROVIDER=simulated; use vtpass")
    if config["VENDING_PROVIDER"] == "vtpass":
        if (config["VTPASS_API_KEY"] == VTPASS_SANDBOX_API_KEY
                or config["VTPASS_SECRET_KEY"] == VTPASS_SANDBOX_SECRET_KEY):
            raise ConfigError(f"{prefix} refuses the VTpass sandbox's default keys; "
                              "set VTPASS_API_KEY and VTPASS_SECRET_KEY")
    gateway = config.get("FUNDING_GATEWAY", "simulated")
    if gateway in {"simulated", "test", "fake"}:
        raise ConfigError(f"{prefix} refuses FUNDING_GATEWAY={gateway}; use paystack")
    paystack_key = config.get("PAYSTACK_SECRET_KEY") or PAYSTACK_SANDBOX_SECRET_KEY
    if paystack_key == PAYSTACK_SANDBOX_SECRET_KEY or paystack_key.startswith("sk_test_"):
        raise ConfigError(f"{prefix} refuses a sandbox or test PAYSTACK_SECRET_KEY")
    public = config.get("PUBLIC_BASE_URL")
    if not public:
        raise ConfigError(f"{prefix} needs PUBLIC_BASE_URL, where customers reach billvend "
                          "(e.g. https://billvend.ng): absolute links are built from it")
    for name in BASE_URL_SETTINGS:
        if name == "VTPASS_BASE_URL" and config["VENDING_PROVIDER"] != "vtpass":
            continue
        url = config.get(name) or (PAYSTACK_SANDBOX_BASE_URL if name == "PAYSTACK_BASE_URL" else None)
        problem = url and _base_url_problem(name, url)
        if problem:
            raise ConfigError(f"{prefix} {problem}" if problem.startswith("refuses")
                              else f"{prefix}: {problem}")
    public_parts = urlsplit(public)
    if public_parts.path not in ("", "/") or public_parts.query or public_parts.fragment:
        raise ConfigError(f"{prefix}: PUBLIC_BASE_URL must be an origin only (https://host[:port]), "
                          f"not {public!r}")
    if not config.get("RATELIMIT_ENABLED", True):
        raise ConfigError(f"{prefix} refuses RATELIMIT_ENABLED=false (for load benchmarks only)")
    storage = str(config.get("RATELIMIT_STORAGE_URI") or "memory://")
    if storage.startswith("memory://"):
        raise ConfigError(f"{prefix} refuses rate limits in process memory (each worker would count "
                          "alone); set REDIS_URL or RATELIMIT_STORAGE_URI")
    if config.get("TRUSTED_PROXY_HOPS") is None:
        raise ConfigError(f"{prefix} needs TRUSTED_PROXY_HOPS: how many proxies stand in front "
                          "(1 behind Heroku's router, 0 with none)")


def sandbox_allowed(config: Mapping[str, Any]) -> bool:
    """Sandbox servers and routes exist only outside production."""
    return config.get("BILLVEND_ENV", DEVELOPMENT) != PRODUCTION


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an absolute URL, else ``None`` (a
    same-origin path such as ``/static/vendor/htmx.min.js``)."""
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"
