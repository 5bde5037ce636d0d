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
    :raises ValueError: when a numeric variable does not parse, or
        ``FUNDING_GATEWAY`` names no gateway.
    """
    env = os.environ if environ is None else environ
    get = env.get
    database_url = _database_url(get("DATABASE_URL"))
    if (get("FUNDING_GATEWAY") or "paystack") not in ("paystack", "simulated"):
        raise ValueError(f"FUNDING_GATEWAY must be paystack or simulated, not {get('FUNDING_GATEWAY')!r}")
    return {
        "SECRET_KEY": get("SECRET_KEY") or "dev-only-not-secret",
        "SQLALCHEMY_DATABASE_URI": database_url,
        # Survive a PostgreSQL restart: a dead pooled connection is replaced
        # before use instead of failing the request.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
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
        "PAYSTACK_BASE_URL": (get("PAYSTACK_BASE_URL") or "http://127.0.0.1:5055").rstrip("/"),
        "PAYSTACK_SECRET_KEY": get("PAYSTACK_SECRET_KEY") or "sk_test_billvend_sandbox",
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
        # Largest webhook body accepted (bytes); bigger gets 413 unread.
        "WEBHOOK_MAX_BYTES": int(get("WEBHOOK_MAX_BYTES") or 65536),
        # The Paystack sandbox's webhook timing: normal, late, twice,
        # before_redirect or never; late waits this long.
        "PAYSTACK_SANDBOX_WEBHOOK": get("PAYSTACK_SANDBOX_WEBHOOK") or "normal",
        "PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS": float(get("PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS") or 5.0),
        # Money limits, in kobo.
        "MIN_FUNDING_KOBO": 100_00,
        "MAX_FUNDING_KOBO": 1_000_000_00,
        "MIN_PAYMENT_KOBO": 500_00,
        "MAX_PAYMENT_KOBO": 500_000_00,
        "PAYMENTS_PER_PAGE": 20,
    }


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
