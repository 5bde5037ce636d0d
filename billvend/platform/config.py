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
from typing import Annotated, Any, Literal, Optional
from urllib.parse import unquote, urlsplit

import click
from flask.cli import AppGroup
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

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
TERMII_SANDBOX_API_KEY = "sandbox-termii-key"
#: Where the sandbox server (billvend.sandbox) listens unless SANDBOX_URL says.
SANDBOX_DEFAULT_URL = "http://127.0.0.1:5055"
PAYSTACK_SANDBOX_BASE_URL = SANDBOX_DEFAULT_URL
#: Where maildev (the Procfile's ``mail``, make run) takes SMTP.
DEV_SMTP_URL = "smtp://127.0.0.1:1025"
#: SMTP_URL schemes and the TLS each means (django-environ's spelling).
SMTP_SCHEMES = {"smtp": None, "smtp+tls": "starttls", "smtps": "starttls", "smtp+ssl": "ssl"}


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


# --- The declared table ------------------------------------------------------
# Every variable billvend reads is one field of Settings below: its name, its
# type (one of the kinds here, each keeping the parsing billvend has always
# done), its default, one line saying what it means, and what production
# requires of it. from_env builds the Flask config from it and
# docs/configuration.md is generated from it (``flask --app wsgi config docs``).
# An empty variable is unset (pydantic-settings' env_ignore_empty).

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class Kind:
    """How a setting's text is read, as docs/configuration.md names it."""

    def __init__(self, label: str) -> None:
        self.label = label


def _python_int(raw: Any) -> Any:
    # Python's int(): " 7 " is 7; "   ", "1.5" and "ten" raise ValueError.
    return int(raw) if isinstance(raw, str) else raw


def _python_int_blank_unset(raw: Any) -> Any:
    if isinstance(raw, str) and not raw.strip():
        raise PydanticUseDefault()
    return _python_int(raw)


def _python_float(raw: Any) -> Any:
    return float(raw) if isinstance(raw, str) else raw


def _flag(raw: Any) -> Any:
    # Anything given that is not a yes word is false ("maybe" included).
    return raw.strip().lower() in TRUE_WORDS if isinstance(raw, str) else raw


def _environment(raw: Any) -> Any:
    return raw.strip().lower() if isinstance(raw, str) else raw


def _seconds_list(raw: Any) -> Any:
    """``"3600,86400"`` -> ``(3600.0, 86400.0)``, ascending; the default
    when only spaces.

    :raises ConfigError: a value that is not a number, or is negative (a
        RuntimeError, so pydantic lets it through unwrapped).
    """
    if not isinstance(raw, str):
        return raw
    if not raw.strip():
        raise PydanticUseDefault()
    try:
        values = tuple(sorted(float(part) for part in raw.split(",") if part.strip()))
    except ValueError:
        raise ConfigError(f"expected comma-separated seconds, got {raw!r}") from None
    if any(value < 0 or value != value for value in values):
        raise ConfigError(f"seconds must not be negative: {raw!r}")
    return values


#: Python's int(); an empty variable is unset, spaces only are not a number.
Integer = Annotated[int, BeforeValidator(_python_int), Kind("integer")]
OptionalInteger = Annotated[Optional[int], BeforeValidator(_python_int), Kind("integer")]
#: Python's int(); empty or spaces only is unset.
BlankInteger = Annotated[Optional[int], BeforeValidator(_python_int_blank_unset), Kind("integer")]
#: Python's float() ("1e3", "inf"); an empty variable is unset.
Number = Annotated[float, BeforeValidator(_python_float), Kind("number")]
#: Kept as given, spaces included.
Text = Annotated[str, Kind("text")]
OptionalText = Annotated[Optional[str], Kind("text")]
#: 1, true, yes or on (any case) is true; anything else given is false.
Flag = Annotated[bool, BeforeValidator(_flag), Kind("flag")]
Seconds = Annotated[tuple[float, ...], NoDecode, BeforeValidator(_seconds_list), Kind("seconds, comma-separated")]


def setting(default: Any, meaning: str, *, production: str = "", shown: str | None = None) -> Any:
    """One row of the table: ``default`` (what an unset or empty variable
    gives), ``meaning`` (one line), ``production`` (what
    ``BILLVEND_ENV=production`` requires of it, :func:`check_production`;
    empty when nothing), ``shown`` (the default as the docs say it, when it
    is computed from other settings)."""
    return Field(default, description=meaning,
                 json_schema_extra={"production": production, "shown": shown})


class Settings(BaseSettings):
    """Every environment variable billvend reads, in the order of
    docs/configuration.md. Field names are the variables' names."""

    model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore")

    # The deployment.
    BILLVEND_ENV: Annotated[Literal["development", "production"], BeforeValidator(_environment),
                            Kind("development or production")] = setting(
        DEVELOPMENT, "production refuses stand-ins and open doors (check_production), marks cookies Secure, "
        "logs JSON and never runs a sandbox", production="production")
    SECRET_KEY: OptionalText = setting(
        None, "signs sessions and CSRF tokens; required (strong) with a DATABASE_URL, a REDIS_URL or in "
        "production, else generated into instance/secret_key",
        production=f"required: {MIN_SECRET_KEY_LENGTH}+ characters, {MIN_SECRET_KEY_BITS}+ bits, never published",
        shown="generated into instance/")
    DATABASE_URL: OptionalText = setting(
        None, "the database (postgres:// and postgresql:// get the psycopg 3 driver)",
        shown="SQLite in instance/billvend.sqlite3")
    REDIS_URL: OptionalText = setting(
        None, "the queue (Huey) and the rate limits' shared counters; unset: SqliteHuey in instance/")
    PUBLIC_BASE_URL: OptionalText = setting(
        None, "where customers reach billvend (https://billvend.ng): every absolute URL is built from it",
        production="required: an https:// origin, not this machine")
    TRUSTED_HOSTS: OptionalText = setting(
        None, "host names requests may name (comma-separated); others get 400",
        shown="PUBLIC_BASE_URL's host in production, else any")
    TRUSTED_PROXY_HOPS: BlankInteger = setting(
        None, "proxies in front whose X-Forwarded-For/-Proto are believed",
        production="required (1 behind Heroku's router, 0 with none)", shown="0; none in production")
    PORT: OptionalText = setting(None, "the web process's port (honcho and Heroku set it); names the webhook "
                                 "URL the sandbox calls", shown="`5000`")
    # Request limits.
    MAX_CONTENT_LENGTH: BlankInteger = setting(1024 * 1024, "largest request body, bytes")
    MAX_FORM_MEMORY_SIZE: BlankInteger = setting(64 * 1024, "largest form data kept in memory, bytes")
    MAX_FORM_PARTS: BlankInteger = setting(200, "most parts of a multipart form")
    # Session lifetimes (billvend/accounts/sessions.py).
    ADMIN_SESSION_IDLE_SECONDS: BlankInteger = setting(30 * 60, "an admin session ends after this long idle")
    ADMIN_SESSION_ABSOLUTE_SECONDS: BlankInteger = setting(12 * 3600, "... and this long after login")
    CUSTOMER_SESSION_IDLE_SECONDS: BlankInteger = setting(24 * 3600, "a customer session ends after this long idle")
    CUSTOMER_SESSION_ABSOLUTE_SECONDS: BlankInteger = setting(7 * 24 * 3600, "... and this long after login")
    REMEMBER_ME_SECONDS: BlankInteger = setting(30 * 24 * 3600, "how long \"keep me signed in\" lasts")
    ANONYMOUS_SESSION_SECONDS: BlankInteger = setting(2 * 3600, "a session before login")
    FRESH_LOGIN_SECONDS: BlankInteger = setting(
        10 * 60, "how long a password entry counts as fresh for password and second-factor changes")
    # Rate limits (Flask-Limiter, `limits` notation "5 per minute;20 per hour").
    RATELIMIT_ENABLED: Flag = setting(True, "false is for load benchmarks only",
                                      production="must stay true")
    RATELIMIT_STORAGE_URI: OptionalText = setting(
        None, "where rate limits count", production="required: REDIS_URL or a shared store, not memory://",
        shown="REDIS_URL, else memory://")
    RATELIMIT_KEY_PREFIX: Text = setting("billvend", "prefix of the rate limits' keys in the store")
    RATELIMIT_LOGIN_ACCOUNT_IP: Text = setting("5 per minute;20 per hour", "logins per account and address")
    RATELIMIT_LOGIN_IP: Text = setting("30 per minute;300 per hour", "logins per address")
    RATELIMIT_LOGIN_ACCOUNT: Text = setting("10 per 15 minutes;50 per day", "logins per account")
    RATELIMIT_SIGNUP_IP: Text = setting("5 per minute;30 per hour", "sign-ups per address")
    RATELIMIT_VERIFY_USER: Text = setting("20 per minute;200 per day", "meter verifications per user")
    RATELIMIT_VERIFY_IP: Text = setting("60 per minute;600 per day", "meter verifications per address")
    RATELIMIT_VERIFY_DISTINCT_METERS: Text = setting("20 per hour", "distinct meters one user verifies")
    RATELIMIT_PAYMENT_USER: Text = setting("10 per minute;200 per day", "payments per user")
    RATELIMIT_FUNDING_USER: Text = setting("10 per minute;100 per day", "wallet fundings per user")
    RATELIMIT_TWO_FACTOR: Text = setting("5 per minute;30 per hour", "second-factor codes per user")
    RATELIMIT_PASSWORD_RESET_EMAIL: Text = setting("3 per hour;10 per day", "password reset emails per address")
    RATELIMIT_PASSWORD_RESET_IP: Text = setting("10 per minute;50 per hour", "password reset requests per IP address")
    RATELIMIT_EMAIL_VERIFICATION_USER: Text = setting(
        "3 per hour;10 per day",
        "verification emails (resends, address changes) and refusals of a taken address per user")
    RATELIMIT_PHONE_CODE_USER: Text = setting("1 per minute;5 per hour",
                                              "phone verification codes sent by SMS per user")
    RATELIMIT_PHONE_CODE_PHONE: Text = setting("5 per hour;10 per day",
                                               "phone verification codes sent by SMS per phone number, "
                                               "whatever the account")
    RATELIMIT_WEBHOOK_IP: Text = setting("600 per minute", "webhooks per sending address")
    # Processes and connections (docs/operations.md, connection budget).
    WEB_THREADS: Integer = setting(32, "requests one web process runs database work for at once: "
                                       "the base of DATABASE_POOL_SIZE (the Procfile's gevent workers "
                                       "serve WEB_CONNECTIONS connections each)")
    # Smaller than WEB_THREADS on purpose: a request holds a connection only
    # while it runs queries, never across provider I/O (DESIGN.md,
    # Transactions) nor while a status long poll sleeps, and one process runs
    # Python on one core at a time. 6 per web process and 6 for the worker
    # (the Procfile sets DATABASE_POOL_SIZE from WORKER_DATABASE_POOL_SIZE for
    # it) keep 2 web + 1 worker under the ~20 connections of small plans.
    DATABASE_POOL_SIZE: OptionalInteger = setting(
        None, "database connections per process (no overflow)", shown="WEB_THREADS, at most 6")
    WORKER_CONCURRENCY: Integer = setting(64, "vends one worker process runs at once (the Procfile reads it too)")
    # Meter verification (billvend.vending.meter_verification).
    METER_VERIFICATION_TTL_SECONDS: Integer = setting(600, "how long a valid meter answer is reused")
    METER_VERIFICATION_INVALID_TTL_SECONDS: Integer = setting(60, "how long a \"no such meter\" answer is reused")
    METER_VERIFICATION_DEADLINE_SECONDS: Number = setting(
        4.0, "hard wall-clock limit of one verification a web request makes")
    # The payment status page.
    STATUS_LONG_POLL_SECONDS: Number = setting(5.0, "how long one status request may wait for a change")
    STATUS_LONG_POLLS_PER_USER: Integer = setting(
        4, "long polls one user may have waiting in one web process; past it, plain polling")
    STATUS_FAST_PHASE_SECONDS: Integer = setting(30, "how long after a payment its page long-polls")
    # Operations.
    METRICS_TOKEN: OptionalText = setting(None, "bearer token for /metrics; unset: loopback only")
    PROMETHEUS_MULTIPROC_DIR: OptionalText = setting(
        None, "prometheus_client's multiprocess directory (make run sets it)")
    LOG_FORMAT: OptionalText = setting(None, "json (one object per line) or text (billvend.platform.logs)",
                                       shown="json in production, else text")
    HUEY_NAME: Text = setting("billvend", "the queue's name")
    HUEY_SQLITE_PATH: Text = setting(str(INSTANCE_DIR / "huey.sqlite3"), "SqliteHuey's file when no REDIS_URL",
                                     shown="`instance/huey.sqlite3`")
    HUEY_IMMEDIATE: Flag = setting(False, "run tasks in the calling process (tests)")
    # Vending.
    VENDING_PROVIDER: Text = setting("simulated", "simulated (in process) or vtpass",
                                     production="vtpass")
    SIMULATOR_SUCCESS_RATE: Number = setting(0.8, "share of the simulator's (and sandbox's) vends that succeed")
    SIMULATOR_DELAY_SECONDS: Number = setting(2.0, "how long one simulated vend takes")
    VTPASS_BASE_URL: OptionalText = setting(None, "the VTpass API (https://vtpass.com)",
                                            production="with vtpass: https://, not this machine",
                                            shown="SANDBOX_URL")
    VTPASS_API_KEY: Text = setting(VTPASS_SANDBOX_API_KEY, "VTpass api-key header",
                                   production="with vtpass: not the sandbox's")
    VTPASS_SECRET_KEY: Text = setting(VTPASS_SANDBOX_SECRET_KEY, "VTpass secret-key header",
                                      production="with vtpass: not the sandbox's")
    VTPASS_CONNECT_TIMEOUT_SECONDS: Number = setting(5.0, "VTpass connect timeout")
    VTPASS_READ_TIMEOUT_SECONDS: Number = setting(30.0, "VTpass read timeout")
    VTPASS_VERIFY_TIMEOUT_SECONDS: Number = setting(
        10.0, "VTpass meter verification timeout (inside a web request: well under gunicorn's 30 s)")
    VTPASS_SEND_ATTEMPTS: Integer = setting(3, "tries of a request whose connection cannot even be opened")
    VTPASS_DEADLINE_SECONDS: Number = setting(
        0.0, "hard wall-clock deadline of one pay or requery call; 0: longest_vend_seconds")
    # The sandbox server (billvend.sandbox).
    SANDBOX_URL: Text = setting(
        SANDBOX_DEFAULT_URL, "where the sandbox server listens (python -m billvend.sandbox, make run); "
        "VTPASS_BASE_URL and PAYSTACK_BASE_URL default to it")
    SANDBOX_TIMEOUT_SLEEP_SECONDS: Number = setting(
        0.0, "how long the timeout meter keeps the client waiting; 0: VTPASS_READ_TIMEOUT_SECONDS + 5")
    SANDBOX_DRIP_SECONDS: Number = setting(
        0.0, "how long the drip meter's pay answer takes in all; 0: VENDING_LEASE_SECONDS + 5")
    SANDBOX_DRIP_INTERVAL_SECONDS: Number = setting(
        0.0, "gap between the drip meter's pieces; 0: half of VTPASS_READ_TIMEOUT_SECONDS")
    SANDBOX_STATE_PATH: Text = setting(str(INSTANCE_DIR / "sandbox-state.json"),
                                       "where the sandbox keeps its state across restarts; none: memory only",
                                       shown="`instance/sandbox-state.json`")
    SANDBOX_LATE_RECORD_SECONDS: Number = setting(30.0, "the late-record meter: requery says 015 this long after pay")
    # SMS to customers (issue 23, billvend.notifications.sms).
    SMS_PROVIDER: Annotated[Literal["termii"], Kind("termii")] = setting(
        "termii", "the SMS gateway's API shape (Termii's POST /api/sms/send)")
    SMS_BASE_URL: OptionalText = setting(None, "the SMS gateway (https://api.ng.termii.com); trailing slashes dropped",
                                         production="https://, not this machine", shown="SANDBOX_URL")
    SMS_API_KEY: Text = setting(TERMII_SANDBOX_API_KEY, "the SMS gateway's api_key",
                                production="required: not the sandbox's")
    SMS_SENDER_ID: Text = setting("BillVend", "the registered sender ID SMS come from (3-11 letters and digits)")
    SMS_CONNECT_TIMEOUT_SECONDS: Number = setting(5.0, "SMS gateway connect timeout")
    SMS_READ_TIMEOUT_SECONDS: Number = setting(10.0, "SMS gateway read timeout")
    SMS_DEADLINE_SECONDS: Number = setting(12.0, "hard wall-clock deadline of one SMS send")
    HTMX_URL: Text = setting(HTMX_CDN_URL, "where pages load htmx from (make run: the pinned local copy)")
    # Payment recovery (DESIGN.md, Vending).
    SWEEP_INTERVAL_SECONDS: Integer = setting(60, "how often the sweep looks for payments to recover")
    PENDING_GRACE_SECONDS: Integer = setting(120, "a pending payment this old is enqueued again")
    VENDING_LEASE_SECONDS: Integer = setting(300, "how long a vend holds its payment; must outlast a vend call")
    REQUERY_BASE_DELAY_SECONDS: Number = setting(5.0, "first requery backoff")
    REQUERY_MAX_DELAY_SECONDS: Number = setting(600.0, "longest requery backoff")
    UNKNOWN_ALERT_AGE_SECONDS: Integer = setting(3600, "an unknown payment this old alerts an admin")
    REQUERY_AFTER_REFUND_DELAYS_SECONDS: Seconds = setting(
        (3600.0, 86400.0), "a payment refunded while uncertain is requeried again after each of these",
        shown="`3600,86400`")
    PROVIDER_NOT_FOUND_GRACE_SECONDS: Number = setting(
        120.0, "a \"never received\" answer is believed only this long after a pay could last be in flight")
    SWEEP_LOCK_SECONDS: Integer = setting(60, "the sweep's lease: one sweeper at a time")
    SLOW_PAYMENT_NOTICE_SECONDS: Integer = setting(30, "the payment page says \"the disco is slow\" after this")
    SUPPORT_CONTACT: Text = setting("support@billvend.ng or 0201 888 0000",
                                    "whom a customer contacts about a payment still unresolved")
    FAULT_SKIP_ENQUEUE: Flag = setting(False, "test-only fault injection: die between commit and enqueue")
    # Messages to customers (issue 23, billvend/notifications).
    SMTP_URL: Text = setting(
        DEV_SMTP_URL, "the mail relay: smtp+tls:// (STARTTLS, e.g. port 587), smtp+ssl:// (TLS from the "
        "first byte, 465) or smtp:// (no TLS: development only); user:password@ in the URL",
        production="smtp+tls:// or smtp+ssl://, not this machine")
    MAIL_FROM: Text = setting("billvend <no-reply@billvend.ng>", "the From of every email")
    SMTP_DEADLINE_SECONDS: Number = setting(
        10.0, "hard wall-clock deadline of one email send (connect, greeting, every reply)")
    NOTIFY_CONCURRENCY: Integer = setting(
        4, "messages one process sends at once, in threads of their own (never the vend threads); "
        "0: this process sends none")
    NOTIFY_ATTEMPTS: Integer = setting(8, "tries of one message before it is marked failed")
    NOTIFY_RETRY_BASE_SECONDS: Number = setting(
        30.0, "first retry delay of a message (doubling); also how long a channel that cannot be "
        "reached is left alone")
    NOTIFY_RETRY_MAX_SECONDS: Number = setting(3600.0, "longest retry delay of a message")
    NOTIFY_CLAIM_SECONDS: Integer = setting(
        120, "a sender holds a message this long; past it (a dead worker) the sweep sends it again")
    TOKEN_RESEND_HOURLY_LIMIT: Integer = setting(
        3, "\"Send token again\" per payment in any hour (counted from the outbox rows)")
    TOKEN_RESEND_DAILY_LIMIT: Integer = setting(
        10, "\"Send token again\" per customer per Africa/Lagos day, all payments together")
    FAULT_SEND_DELAY_SECONDS: Number = setting(
        0.0, "test-only fault injection: a sender waits this long between claiming a message and sending it")
    # Transfers between customers (issue 27, billvend.transfers; billvend.ledger.limits).
    TRANSFER_DAILY_LIMIT_KOBO: Integer = setting(
        50_000_000, "kobo one customer may send to other customers per Africa/Lagos day (N500,000)")
    UNVERIFIED_DAILY_LIMIT_KOBO: Integer = setting(
        5_000_000, "the daily limit instead (kobo, N50,000) for an account missing a verified email "
        "or a verified phone")
    TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR: Integer = setting(
        10, "different recipients one customer may look up on the transfer page per hour (asking "
        "again about one already seen is free)")
    RATELIMIT_TRANSFER_USER: Text = setting("10 per minute;100 per day", "transfer submits per user")
    # Money in (issue 15).
    FUNDING_GATEWAY: Annotated[Literal["paystack", "simulated"], Kind("paystack or simulated")] = setting(
        "paystack", "the card gateway", production="paystack")
    PAYSTACK_BASE_URL: OptionalText = setting(
        None, "the Paystack API (https://api.paystack.co); trailing slashes dropped",
        production="https://, not this machine", shown="SANDBOX_URL")
    PAYSTACK_CHECKOUT_URL: OptionalText = setting(
        None, "the checkout page when not on PAYSTACK_BASE_URL's origin (https://checkout.paystack.com)",
        production="when set: https://, not this machine")
    PAYSTACK_SECRET_KEY: Text = setting(PAYSTACK_SANDBOX_SECRET_KEY, "Paystack secret key",
                                        production="required: not the sandbox's, not sk_test_")
    PAYSTACK_PUBLIC_KEY: Text = setting("pk_test_billvend_sandbox", "Paystack public key")
    PAYSTACK_WEBHOOK_URL: OptionalText = setting(
        None, "where the sandbox sends its webhooks (the sandbox only reads it)",
        shown="`http://127.0.0.1:$PORT/webhooks/paystack`")
    PAYSTACK_CONNECT_TIMEOUT_SECONDS: Number = setting(5.0, "Paystack connect timeout")
    PAYSTACK_READ_TIMEOUT_SECONDS: Number = setting(10.0, "Paystack read timeout")
    PAYSTACK_DEADLINE_SECONDS: Number = setting(12.0, "hard wall-clock deadline of one Paystack call")
    PAYSTACK_PREFERRED_BANK: Text = setting("test-bank", "the bank a dedicated account is opened at")
    FUNDING_VERIFY_AFTER_SECONDS: Integer = setting(180, "an open funding this old is verified again by the sweep")
    FUNDING_VERIFY_BASE_DELAY_SECONDS: Number = setting(60.0, "first funding verification backoff")
    FUNDING_VERIFY_MAX_DELAY_SECONDS: Number = setting(3600.0, "longest funding verification backoff")
    FUNDING_GIVE_UP_SECONDS: Integer = setting(3600, "a checkout the gateway never heard of ends failed after this")
    FUNDING_EXPIRE_SECONDS: Integer = setting(86400, "a funding with no final answer is closed failed after this")
    FUNDING_RECONCILE_DAYS: Integer = setting(2, "days the nightly reconciliation covers, yesterday last")
    FUNDING_RECHECK_FAILED_DAYS: Integer = setting(
        7, "each night, card fundings closed as failed this many days back are verified again")
    WEBHOOK_MAX_BYTES: Integer = setting(65536, "largest webhook body accepted; bigger gets 413 unread")
    PAYSTACK_SANDBOX_WEBHOOK: Text = setting("normal",
                                             "the sandbox's webhook timing: normal, late, twice, before_redirect "
                                             "or never")
    PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS: Number = setting(5.0, "how long late waits")
    PAYSTACK_SANDBOX_ABANDON_SECONDS: Number = setting(
        1800.0, "the sandbox reports a checkout, or a transfer waiting for its OTP, abandoned after this")
    PAYSTACK_SANDBOX_BALANCE_KOBO: Integer = setting(
        100_000_000_000, "the sandbox business's balance that transfers (withdrawals) are paid from")
    PAYSTACK_SANDBOX_TRANSFER_SETTLE_SECONDS: Number = setting(
        2.0, "how long the sandbox's transfers stay pending before they succeed or fail")
    PAYSTACK_SANDBOX_TRANSFER_REVERSE_SECONDS: Number = setting(
        10.0, "how long after its success the sandbox reverses a transfer to 2222222222")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any,
                                   **others: Any) -> tuple[Any, ...]:
        # read_settings hands over the variables it read; no .env file, no
        # secrets directory, nothing read behind its back.
        return (init_settings,)


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' own environment source (case-sensitive names,
    empty meaning unset), over the mapping given instead of ``os.environ``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The declared settings read from ``environ`` (``os.environ`` when ``None``).

    :raises ValueError: a variable that does not parse as its kind, one line
        naming it (pydantic's ValidationError is a ValueError).
    :raises ConfigError: ``REQUERY_AFTER_REFUND_DELAYS_SECONDS`` malformed.
    """
    return Settings(**_EnvironSource(os.environ if environ is None else environ)())


#: Flask config that no variable sets.
FIXED_CONFIG: dict[str, Any] = {
    # Cookies: never readable by scripts, not sent on cross-site POSTs
    # (Secure follows BILLVEND_ENV).
    "SESSION_COOKIE_NAME": "session",
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_NAME": "remember",
    # A form's CSRF token lives as long as its server-side session, not
    # Flask-WTF's extra hour: a pay form left open over lunch still submits;
    # a session that ended takes it along.
    "WTF_CSRF_TIME_LIMIT": None,
    "MIN_PASSWORD_LENGTH": 10,
    # Redis down or unreachable: count in this process's memory until it is
    # back (limits stay, per process) instead of failing the request.
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
    "RATELIMIT_SWALLOW_ERRORS": True,
    "RATELIMIT_STRATEGY": "moving-window",
    "HTMX_SRI": HTMX_SRI,
    # Money limits, in kobo.
    "MIN_FUNDING_KOBO": 100_00,
    "MAX_FUNDING_KOBO": 1_000_000_00,
    "MIN_PAYMENT_KOBO": 500_00,
    "MAX_PAYMENT_KOBO": 500_000_00,
    "MIN_P2P_TRANSFER_KOBO": 1_00,
    "MAX_P2P_TRANSFER_KOBO": 5_000_000_00,
    # Admin adjustments and bonuses (billvend.adjustments): one kobo up to N1,000,000
    # each; a proposal waits this long for a second admin (database clock).
    "MIN_ADJUSTMENT_KOBO": 1,
    "MAX_ADJUSTMENT_KOBO": 1_000_000_00,
    "ADJUSTMENT_TTL_SECONDS": 24 * 3600,
    "PAYMENTS_PER_PAGE": 20,
}


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables
    (:class:`Settings`, :data:`FIXED_CONFIG`, and what follows from them).

    :param environ: the variables to read; ``os.environ`` when ``None``.
    :returns: a dict of upper-case config keys, ready for ``app.config.update``.
    :raises ValueError: when a variable does not parse (``FUNDING_GATEWAY``
        naming no gateway included).
    :raises ConfigError: ``REQUERY_AFTER_REFUND_DELAYS_SECONDS`` malformed.
    """
    settings = read_settings(environ)
    config = settings.model_dump()
    production = settings.BILLVEND_ENV == PRODUCTION
    database_url = config.pop("DATABASE_URL")
    port = config.pop("PORT")
    public_base_url = (settings.PUBLIC_BASE_URL or "").strip().rstrip("/") or None
    trusted_hosts = [h.strip() for h in (settings.TRUSTED_HOSTS or "").split(",") if h.strip()] or None
    if trusted_hosts is None and production and public_base_url:
        # Production answers only to its own name: a request naming another
        # Host (a poisoned link, a cache keyed by Host) gets a 400.
        trusted_hosts = [urlsplit(public_base_url).hostname or ""]
    ratelimit_storage = settings.RATELIMIT_STORAGE_URI or settings.REDIS_URL or "memory://"
    pool_size = settings.DATABASE_POOL_SIZE
    if pool_size is None:
        pool_size = min(settings.WEB_THREADS, 6)
    uri = _database_url(database_url)
    config.update(FIXED_CONFIG)
    config.update({
        # A deployed topology (a database or Redis of its own, or production)
        # must be given a strong key: its processes cannot share a generated one.
        "REQUIRE_SECRET_KEY": production or bool(database_url) or bool(settings.REDIS_URL),
        # Locally nothing sits in front (0); production must say (None until
        # it does: check_production refuses it), since a guess of 1 without a
        # proxy lets a forged X-Forwarded-For pick the rate limits' address.
        "TRUSTED_PROXY_HOPS": settings.TRUSTED_PROXY_HOPS if settings.TRUSTED_PROXY_HOPS is not None
        else (None if production else 0),
        "PUBLIC_BASE_URL": public_base_url,
        "TRUSTED_HOSTS": trusted_hosts,
        "SESSION_COOKIE_SECURE": production,
        "RATELIMIT_STORAGE_URI": ratelimit_storage,
        # A partition must not hang a request.
        "RATELIMIT_STORAGE_OPTIONS": ({"socket_connect_timeout": 2, "socket_timeout": 2}
                                      if ratelimit_storage.startswith(("redis://", "rediss://")) else {}),
        "SQLALCHEMY_DATABASE_URI": uri,
        # Survive a PostgreSQL restart: a dead pooled connection is replaced
        # before use instead of failing the request.
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(uri, pool_size),
        "DATABASE_POOL_SIZE": pool_size,
        "LOG_FORMAT": (settings.LOG_FORMAT or ("json" if production else "text")).lower(),
        # Both outside systems are the sandbox unless pointed elsewhere, each
        # on its own: moving one never moves the sandbox or the other.
        "VTPASS_BASE_URL": settings.VTPASS_BASE_URL or settings.SANDBOX_URL,
        "PAYSTACK_BASE_URL": (settings.PAYSTACK_BASE_URL or settings.SANDBOX_URL).rstrip("/"),
        "SMS_BASE_URL": (settings.SMS_BASE_URL or settings.SANDBOX_URL).rstrip("/"),
        "PAYSTACK_WEBHOOK_URL": settings.PAYSTACK_WEBHOOK_URL
        or f"http://127.0.0.1:{port or 5000}/webhooks/paystack",
    })
    return config


def _default_shown(field: Any) -> str:
    shown = (field.json_schema_extra or {}).get("shown")
    if shown is not None:
        return shown
    if field.default is None:
        return "unset"
    if isinstance(field.default, bool):
        return "`true`" if field.default else "`false`"
    if isinstance(field.default, float) and field.default == int(field.default):
        return f"`{int(field.default)}`"
    return f"`{field.default}`"


def configuration_markdown() -> str:
    """docs/configuration.md, generated from :class:`Settings`: one row per
    variable (name, kind, default, meaning, what production requires)."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from billvend/platform/config.py (class Settings) by",
        "     `flask --app wsgi config docs > docs/configuration.md`; tests/test_config.py",
        "     fails when this file differs. Edit the declaration, not this file. -->",
        "",
        "Every setting is an environment variable, read once by `billvend/platform/config.py`.",
        "An empty variable is unset. With nothing set, `make run` works: SQLite and SqliteHuey in",
        "`instance/`, the simulated provider, the sandbox at `SANDBOX_URL` as the gateway.",
        "`BILLVEND_ENV=production` refuses to start, with one line naming the variable, when a",
        "setting misses what its *production* column says. Numbers that do not parse stop the start.",
        "",
        "| variable | kind | default | meaning | production |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        kind = next((m.label for m in field.metadata if isinstance(m, Kind)), "text")
        production = (field.json_schema_extra or {}).get("production") or ""
        cells = [f"`{name}`", kind, _default_shown(field), field.description or "", production]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        "Read by the Procfile's shell, not by billvend: `WEB_CONCURRENCY` (web processes, 2),",
        "`WEB_CONNECTIONS` (connections one gevent web process serves at once, 1000),",
        "`WORKER_DATABASE_POOL_SIZE` (the worker's `DATABASE_POOL_SIZE`, 6),",
        "`WORKER_SHUTDOWN_TIMEOUT_SECONDS` (20).",
        "",
    ]
    return "\n".join(lines)


config_cli = AppGroup("config", help="The declared settings.")


@config_cli.command("docs")
def _config_docs_command() -> None:
    """Print docs/configuration.md as the declaration generates it."""
    click.echo(configuration_markdown(), nl=False)


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
        :func:`vend_deadline_seconds`, ``NOTIFY_CLAIM_SECONDS`` not longer
        than ``SMTP_DEADLINE_SECONDS`` or ``SMS_DEADLINE_SECONDS``, or a
        timing is negative.
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
    # The message sweep sends again what a sender claimed longer ago than
    # this: an email still being sent would go out twice.
    # An SMS send likewise.
    for deadline, default in (("SMTP_DEADLINE_SECONDS", 10.0), ("SMS_DEADLINE_SECONDS", 12.0)):
        if config.get("NOTIFY_CLAIM_SECONDS", 120) <= config.get(deadline, default):
            raise ValueError(f"NOTIFY_CLAIM_SECONDS ({config['NOTIFY_CLAIM_SECONDS']}) must be longer than "
                             f"{deadline} ({config[deadline]:g})")


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
BASE_URL_SETTINGS = ("VTPASS_BASE_URL", "PAYSTACK_BASE_URL", "PAYSTACK_CHECKOUT_URL", "PUBLIC_BASE_URL",
                     "SMS_BASE_URL")
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


def parse_smtp_url(url: str) -> dict[str, Any]:
    """``SMTP_URL`` as its parts: ``host``, ``port``, ``username``, ``password``
    (percent-decoded, None when absent) and ``tls`` (None, "starttls" or
    "ssl", from the scheme: :data:`SMTP_SCHEMES`). The port defaults to 25,
    587 with STARTTLS and 465 with TLS.

    :raises ConfigError: for another scheme or no host.
    """
    parts = urlsplit(url)
    if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
        raise ConfigError(f"SMTP_URL must be smtp://, smtp+tls:// or smtp+ssl://host[:port], not {url!r}")
    tls = SMTP_SCHEMES[parts.scheme]
    return {"host": parts.hostname, "port": parts.port or {None: 25, "starttls": 587, "ssl": 465}[tls],
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None, "tls": tls}


def _smtp_url_problem(url: str) -> str | None:
    try:
        parts = parse_smtp_url(url)
    except ConfigError as exc:
        return f"refuses it: {exc}"
    if parts["tls"] is None:
        return ("refuses SMTP_URL without TLS (smtp://): passwords and tokens would cross the network "
                "in clear; use smtp+tls:// (STARTTLS) or smtp+ssl://")
    if is_loopback_host(parts["host"]):
        return f"refuses a loopback SMTP_URL ({parts['host']}: this machine, e.g. maildev)"
    return None


def check_production(config: Mapping[str, Any]) -> None:
    """Refuse a production configuration that still points at a stand-in or
    leaves a door open.

    With ``BILLVEND_ENV=production``: no simulated provider or gateway; no
    sandbox default key (VTpass's, the Paystack sandbox's, or any Paystack
    ``sk_test_`` key); every base URL (:data:`BASE_URL_SETTINGS`) https://
    and not loopback in any spelling; ``PUBLIC_BASE_URL`` set, to an origin
    only; rate limits on and shared (Redis, not process memory);
    ``TRUSTED_PROXY_HOPS`` stated; ``SMTP_URL`` with TLS and not loopback
    (maildev); a SECRET_KEY of at least
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
    if config.get("SMS_API_KEY", TERMII_SANDBOX_API_KEY) == TERMII_SANDBOX_API_KEY:
        raise ConfigError(f"{prefix} refuses the SMS sandbox's default key; set SMS_API_KEY")
    sender_id = str(config.get("SMS_SENDER_ID") or "")
    if not (3 <= len(sender_id) <= 11 and sender_id.isascii() and sender_id.isalnum()):
        raise ConfigError(f"{prefix}: SMS_SENDER_ID must be a registered sender ID of 3-11 letters and digits")
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
    problem = _smtp_url_problem(config.get("SMTP_URL") or DEV_SMTP_URL)
    if problem:
        raise ConfigError(f"{prefix} {problem}")
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
