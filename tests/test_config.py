"""Configuration from the environment, and the timings it must respect."""

import pytest

from billvend import create_app
from billvend.platform.config import check_timings, from_env


def test_heroku_database_url_is_normalised():
    config = from_env({"DATABASE_URL": "postgres://u:p@db.example:5432/app"})
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@db.example:5432/app"
    assert from_env({})["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert from_env({})["REDIS_URL"] is None and from_env({})["VENDING_PROVIDER"] == "simulated"


def test_the_defaults_respect_the_vending_lease():
    check_timings(from_env({}))
    check_timings(from_env({"VENDING_PROVIDER": "vtpass"}))


@pytest.mark.parametrize("env", [
    {"VENDING_PROVIDER": "vtpass", "VENDING_LEASE_SECONDS": "30"},  # < the 30 s read timeout
    {"SIMULATOR_DELAY_SECONDS": "10", "VENDING_LEASE_SECONDS": "5"},
])
def test_a_lease_shorter_than_a_vend_is_refused(env):
    with pytest.raises(ValueError, match="VENDING_LEASE_SECONDS"):
        check_timings(from_env(env))
    with pytest.raises(ValueError, match="VENDING_LEASE_SECONDS"):
        create_app(from_env(env))


def test_the_vtpass_deadline_defaults_to_the_longest_call_and_the_lease_must_outlast_it():
    from billvend.platform.config import longest_vend_seconds, vend_deadline_seconds

    config = from_env({"VENDING_PROVIDER": "vtpass"})
    assert vend_deadline_seconds(config) == longest_vend_seconds(config) == 3 * (5 + 1) + 30
    assert from_env({})["PROVIDER_NOT_FOUND_GRACE_SECONDS"] == 120
    short = from_env({"VENDING_PROVIDER": "vtpass", "VTPASS_DEADLINE_SECONDS": "20",
                      "VENDING_LEASE_SECONDS": "25"})
    check_timings(short)  # a 20 s deadline fits in a 25 s lease
    with pytest.raises(ValueError, match="VENDING_LEASE_SECONDS"):
        check_timings(short | {"VTPASS_DEADLINE_SECONDS": 25.0})


def test_a_message_claim_shorter_than_an_email_or_sms_send_is_refused():
    """The sweep sends again a message whose claim expired: a claim shorter
    than the send's deadline would send it twice while the first send runs."""
    env = {"NOTIFY_CLAIM_SECONDS": "10", "SMTP_DEADLINE_SECONDS": "10"}
    with pytest.raises(ValueError, match="NOTIFY_CLAIM_SECONDS"):
        check_timings(from_env(env))
    check_timings(from_env(env | {"SMTP_DEADLINE_SECONDS": "9.5", "SMS_DEADLINE_SECONDS": "9.5"}))
    sms = {"NOTIFY_CLAIM_SECONDS": "10", "SMTP_DEADLINE_SECONDS": "5", "SMS_DEADLINE_SECONDS": "10"}
    with pytest.raises(ValueError, match="SMS_DEADLINE_SECONDS"):  # an SMS send, the same
        check_timings(from_env(sms))
    check_timings(from_env(sms | {"SMS_DEADLINE_SECONDS": "9.5"}))


# --- Production refuses unsafe configurations (issue 21, item 3) --------------------

import re  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from billvend.platform.config import (  # noqa: E402
    ConfigError, check_production, is_loopback_url, parse_smtp_url, resolve_secret_key, secret_key_bits,
)

ROOT = Path(__file__).resolve().parent.parent
#: A production configuration that starts: every setting a real deployment needs.
PRODUCTION = {
    "BILLVEND_ENV": "production", "SECRET_KEY": secrets.token_hex(32),
    "VENDING_PROVIDER": "vtpass", "VTPASS_BASE_URL": "https://vtpass.com",
    "VTPASS_API_KEY": "live-api-key", "VTPASS_SECRET_KEY": "live-secret-key",
    "FUNDING_GATEWAY": "paystack", "PAYSTACK_BASE_URL": "https://api.paystack.co",
    "PAYSTACK_SECRET_KEY": "sk_live_0123456789", "PAYSTACK_CHECKOUT_URL": "https://checkout.paystack.com",
    "REDIS_URL": "redis://redis.internal:6379/0", "TRUSTED_PROXY_HOPS": "1",
    "PUBLIC_BASE_URL": "https://billvend.ng",
    "SMTP_URL": "smtp+tls://mailer:p%40ss@smtp.mailgun.org:587",
    "SMS_BASE_URL": "https://api.ng.termii.com", "SMS_API_KEY": "live-termii-key",
}


def production_check(env: dict) -> None:
    config = from_env(env)
    resolve_secret_key(config)
    check_production(config)


def test_a_complete_production_configuration_starts():
    production_check(PRODUCTION)
    config = from_env(PRODUCTION)
    assert config["TRUSTED_HOSTS"] == ["billvend.ng"]
    assert config["TRUSTED_PROXY_HOPS"] == 1


LOOPBACK_SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f.1", "0x7f000001", "0177.0.0.1",
                      "127.0.1", "[::1]", "[::ffff:127.0.0.1]", "[0:0:0:0:0:0:0:1]", "localhost",
                      "localhost.", "LOCALHOST", "anything.localhost", "a.b.localhost.", "0.0.0.0",
                      "0", "[::]", "127.255.255.254", "[::ffff:7f00:1]"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_loopback(host):
    assert is_loopback_url(f"https://{host}:8443/api")
    assert is_loopback_url(f"https://{host}")


@pytest.mark.parametrize("host", ["vtpass.com", "api.paystack.co", "128.0.0.1", "10.0.0.1",
                                  "[2001:db8::1]", "localhost.example.com", "mylocalhost",
                                  "127.example.com", "0x7f.example"])
def test_outside_hosts_are_not_loopback(host):
    assert not is_loopback_url(f"https://{host}/")


@pytest.mark.parametrize("name", ["VTPASS_BASE_URL", "PAYSTACK_BASE_URL", "PAYSTACK_CHECKOUT_URL",
                                  "PUBLIC_BASE_URL", "SMS_BASE_URL"])
@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "[::1]", "[::ffff:127.0.0.1]",
                                  "localhost.", "anything.localhost"])
def test_production_refuses_a_loopback_base_url_in_any_spelling(name, host):
    with pytest.raises(ConfigError, match=re.escape(f"loopback {name}")):
        production_check(PRODUCTION | {name: f"https://{host}:5055"})
    production_check(PRODUCTION | {name: f"https://{host}:5055", "BILLVEND_ENV": "development"})


@pytest.mark.parametrize("name", ["VTPASS_BASE_URL", "PAYSTACK_BASE_URL", "PAYSTACK_CHECKOUT_URL",
                                  "PUBLIC_BASE_URL", "SMS_BASE_URL"])
def test_production_refuses_plain_http_to_the_provider_the_gateway_and_customers(name):
    url = PRODUCTION[name].replace("https://", "http://")
    with pytest.raises(ConfigError, match=re.escape(f"{name} must be an https:// URL")):
        production_check(PRODUCTION | {name: url})


@pytest.mark.parametrize("change,needle", [
    ({"REDIS_URL": ""}, "rate limits in process memory"),
    ({"RATELIMIT_STORAGE_URI": "memory://"}, "rate limits in process memory"),
    ({"RATELIMIT_ENABLED": "false"}, "RATELIMIT_ENABLED=false"),
    ({"SECRET_KEY": "abcdefgh" * 4}, "bits"),
    ({"TRUSTED_PROXY_HOPS": ""}, "TRUSTED_PROXY_HOPS"),
    ({"PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL"),
    ({"PUBLIC_BASE_URL": "https://billvend.ng/some/path?x=1"}, "PUBLIC_BASE_URL"),
])
def test_production_refuses_each_unsafe_setting(change, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        production_check(PRODUCTION | change)


@pytest.mark.parametrize("url,needle", [
    ("smtp://smtp.mailgun.org:587", "SMTP_URL without TLS"),
    ("smtp+tls://localhost:1025", "loopback SMTP_URL"),
    ("smtp+ssl://[::1]:465", "loopback SMTP_URL"),
    ("smtp+tls://0x7f.1:587", "loopback SMTP_URL"),
    ("https://smtp.mailgun.org", "SMTP_URL must be smtp://"),
])
def test_production_refuses_mail_without_tls_or_to_this_machine(url, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        production_check(PRODUCTION | {"SMTP_URL": url})
    production_check(PRODUCTION | {"SMTP_URL": "smtp+ssl://smtp.mailgun.org"})


def test_smtp_url_gives_host_port_credentials_and_tls():
    assert parse_smtp_url("smtp+tls://mailer:p%40ss@smtp.mailgun.org") == {
        "host": "smtp.mailgun.org", "port": 587, "username": "mailer", "password": "p@ss", "tls": "starttls"}
    assert parse_smtp_url("smtp+ssl://smtp.mailgun.org")["port"] == 465
    assert parse_smtp_url("smtp://127.0.0.1:1025") == {
        "host": "127.0.0.1", "port": 1025, "username": None, "password": None, "tls": None}
    with pytest.raises(ConfigError):
        parse_smtp_url("smtp://")


def test_trusted_proxy_hops_zero_is_a_stated_answer():
    config = from_env(PRODUCTION | {"TRUSTED_PROXY_HOPS": "0"})
    check_production(config)
    assert config["TRUSTED_PROXY_HOPS"] == 0
    assert from_env({})["TRUSTED_PROXY_HOPS"] == 0  # development: nothing in front


def test_secret_key_entropy_is_length_times_log2_of_distinct_characters():
    assert secret_key_bits("abcdefgh" * 4) == 96
    assert secret_key_bits("0123456789abcdef" * 4) == 256
    for _ in range(20):
        assert secret_key_bits(secrets.token_hex(32)) >= 128
        assert secret_key_bits(secrets.token_urlsafe(32)) >= 128
        production_check(PRODUCTION | {"SECRET_KEY": secrets.token_urlsafe(32)})


@pytest.mark.once
@pytest.mark.parametrize("change,needle", [
    ({"TRUSTED_PROXY_HOPS": None}, "TRUSTED_PROXY_HOPS"),
    ({"REDIS_URL": None}, "REDIS_URL"),
    ({"PUBLIC_BASE_URL": "https://0x7f.1"}, "loopback PUBLIC_BASE_URL"),
])
def test_production_exits_with_one_line(change, needle):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLVEND", "VTPASS", "PAYSTACK",
                                                                       "REDIS", "RATELIMIT", "TRUSTED",
                                                                       "PUBLIC", "SECRET", "DATABASE"))}
    env.update({k: v for k, v in (PRODUCTION | change).items() if v is not None})
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_trusted_hosts_can_be_listed_and_default_to_none_in_development():
    assert from_env({})["TRUSTED_HOSTS"] is None
    assert from_env({"PUBLIC_BASE_URL": "https://billvend.ng"})["TRUSTED_HOSTS"] is None
    listed = from_env(PRODUCTION | {"TRUSTED_HOSTS": "billvend.ng, www.billvend.ng"})
    assert listed["TRUSTED_HOSTS"] == ["billvend.ng", "www.billvend.ng"]


# --- Every setting parses as it did before the declared table (issue 22) ----------
# Written against the hand-written from_env first, then kept passing across its
# rewrite: a table of environment inputs -> the config values they give.

import math  # noqa: E402

from billvend.platform.config import INSTANCE_DIR  # noqa: E402

TODAYS_DEFAULTS = {
    'BILLVEND_ENV': 'development',
    'SECRET_KEY': None,
    'REQUIRE_SECRET_KEY': False,
    'TRUSTED_PROXY_HOPS': 0,
    'PUBLIC_BASE_URL': None,
    'TRUSTED_HOSTS': None,
    'MAX_CONTENT_LENGTH': 1048576,
    'MAX_FORM_MEMORY_SIZE': 65536,
    'MAX_FORM_PARTS': 200,
    'SESSION_COOKIE_NAME': 'session',
    'SESSION_COOKIE_HTTPONLY': True,
    'SESSION_COOKIE_SAMESITE': 'Lax',
    'SESSION_COOKIE_SECURE': False,
    'REMEMBER_COOKIE_NAME': 'remember',
    'ADMIN_SESSION_IDLE_SECONDS': 1800,
    'ADMIN_SESSION_ABSOLUTE_SECONDS': 43200,
    'CUSTOMER_SESSION_IDLE_SECONDS': 86400,
    'CUSTOMER_SESSION_ABSOLUTE_SECONDS': 604800,
    'REMEMBER_ME_SECONDS': 2592000,
    'ANONYMOUS_SESSION_SECONDS': 7200,
    'WTF_CSRF_TIME_LIMIT': None,
    'FRESH_LOGIN_SECONDS': 600,
    'MIN_PASSWORD_LENGTH': 10,
    'RATELIMIT_ENABLED': True,
    'RATELIMIT_STORAGE_URI': 'memory://',
    'RATELIMIT_IN_MEMORY_FALLBACK_ENABLED': True,
    'RATELIMIT_SWALLOW_ERRORS': True,
    'RATELIMIT_STORAGE_OPTIONS': {},
    'RATELIMIT_KEY_PREFIX': 'billvend',
    'RATELIMIT_STRATEGY': 'moving-window',
    'RATELIMIT_LOGIN_ACCOUNT_IP': '5 per minute;20 per hour',
    'RATELIMIT_LOGIN_IP': '30 per minute;300 per hour',
    'RATELIMIT_LOGIN_ACCOUNT': '10 per 15 minutes;50 per day',
    'RATELIMIT_SIGNUP_IP': '5 per minute;30 per hour',
    'RATELIMIT_VERIFY_USER': '20 per minute;200 per day',
    'RATELIMIT_VERIFY_IP': '60 per minute;600 per day',
    'RATELIMIT_VERIFY_DISTINCT_METERS': '20 per hour',
    'RATELIMIT_PAYMENT_USER': '10 per minute;200 per day',
    'RATELIMIT_FUNDING_USER': '10 per minute;100 per day',
    'RATELIMIT_TWO_FACTOR': '5 per minute;30 per hour',
    'RATELIMIT_PASSWORD_RESET_EMAIL': '3 per hour;10 per day',
    'RATELIMIT_PASSWORD_RESET_IP': '10 per minute;50 per hour',
    'RATELIMIT_EMAIL_VERIFICATION_USER': '3 per hour;10 per day',
    'RATELIMIT_PHONE_CODE_USER': '1 per minute;5 per hour',
    'RATELIMIT_PHONE_CODE_PHONE': '5 per hour;10 per day',
    'RATELIMIT_WEBHOOK_IP': '600 per minute',
    'PAYSTACK_CHECKOUT_URL': None,
    'SQLALCHEMY_DATABASE_URI': f"sqlite:///{INSTANCE_DIR / 'billvend.sqlite3'}",
    'SQLALCHEMY_ENGINE_OPTIONS': {'pool_pre_ping': True, 'pool_size': 6, 'max_overflow': 0,
                                  'pool_timeout': 30},
    'WEB_THREADS': 32,
    'DATABASE_POOL_SIZE': 6,
    'WORKER_CONCURRENCY': 64,
    'METER_VERIFICATION_TTL_SECONDS': 600,
    'METER_VERIFICATION_INVALID_TTL_SECONDS': 60,
    'METER_VERIFICATION_DEADLINE_SECONDS': 4.0,
    'STATUS_LONG_POLL_SECONDS': 5.0,
    'STATUS_LONG_POLLS_PER_USER': 4,
    'STATUS_FAST_PHASE_SECONDS': 30,
    'METRICS_TOKEN': None,
    'PROMETHEUS_MULTIPROC_DIR': None,
    'LOG_FORMAT': 'text',
    'REDIS_URL': None,
    'HUEY_NAME': 'billvend',
    'HUEY_SQLITE_PATH': str(INSTANCE_DIR / 'huey.sqlite3'),
    'HUEY_IMMEDIATE': False,
    'VENDING_PROVIDER': 'simulated',
    'SIMULATOR_SUCCESS_RATE': 0.8,
    'SIMULATOR_DELAY_SECONDS': 2.0,
    'VTPASS_BASE_URL': 'http://127.0.0.1:5055',
    'VTPASS_API_KEY': 'sandbox-api-key',
    'VTPASS_SECRET_KEY': 'sandbox-secret-key',
    'VTPASS_CONNECT_TIMEOUT_SECONDS': 5.0,
    'VTPASS_READ_TIMEOUT_SECONDS': 30.0,
    'VTPASS_VERIFY_TIMEOUT_SECONDS': 10.0,
    'VTPASS_SEND_ATTEMPTS': 3,
    'VTPASS_DEADLINE_SECONDS': 0.0,
    'SANDBOX_TIMEOUT_SLEEP_SECONDS': 0.0,
    'SANDBOX_DRIP_SECONDS': 0.0,
    'SANDBOX_DRIP_INTERVAL_SECONDS': 0.0,
    'SANDBOX_STATE_PATH': str(INSTANCE_DIR / 'sandbox-state.json'),
    'SANDBOX_LATE_RECORD_SECONDS': 30.0,
    'SMS_PROVIDER': 'termii',
    'SMS_BASE_URL': 'http://127.0.0.1:5055',
    'SMS_API_KEY': 'sandbox-termii-key',
    'SMS_SENDER_ID': 'BillVend',
    'SMS_CONNECT_TIMEOUT_SECONDS': 5.0,
    'SMS_READ_TIMEOUT_SECONDS': 10.0,
    'SMS_DEADLINE_SECONDS': 12.0,
    'HTMX_URL': 'https://cdn.jsdelivr.net/npm/htmx.org@2.0.11/dist/htmx.min.js',
    'HTMX_SRI': 'sha384-2OatzQy1H+Zd/IIrjr1TcuDGqLXeHhbooAyJY1KdQMKnr4LZ22k31GBLdYKHmVjg',
    'SWEEP_INTERVAL_SECONDS': 60,
    'PENDING_GRACE_SECONDS': 120,
    'VENDING_LEASE_SECONDS': 300,
    'REQUERY_BASE_DELAY_SECONDS': 5.0,
    'REQUERY_MAX_DELAY_SECONDS': 600.0,
    'UNKNOWN_ALERT_AGE_SECONDS': 3600,
    'REQUERY_AFTER_REFUND_DELAYS_SECONDS': (3600.0, 86400.0),
    'PROVIDER_NOT_FOUND_GRACE_SECONDS': 120.0,
    'SWEEP_LOCK_SECONDS': 60,
    'SLOW_PAYMENT_NOTICE_SECONDS': 30,
    'SUPPORT_CONTACT': 'support@billvend.ng or 0201 888 0000',
    'FAULT_SKIP_ENQUEUE': False,
    'SMTP_URL': 'smtp://127.0.0.1:1025',
    'MAIL_FROM': 'billvend <no-reply@billvend.ng>',
    'SMTP_DEADLINE_SECONDS': 10.0,
    'NOTIFY_CONCURRENCY': 4,
    'NOTIFY_ATTEMPTS': 8,
    'TOKEN_RESEND_HOURLY_LIMIT': 3,
    'TOKEN_RESEND_DAILY_LIMIT': 10,
    'NOTIFY_RETRY_BASE_SECONDS': 30.0,
    'NOTIFY_RETRY_MAX_SECONDS': 3600.0,
    'NOTIFY_CLAIM_SECONDS': 120,
    'FAULT_SEND_DELAY_SECONDS': 0.0,
    'FUNDING_GATEWAY': 'paystack',
    'PAYSTACK_BASE_URL': 'http://127.0.0.1:5055',
    'PAYSTACK_SECRET_KEY': 'sk_test_billvend_sandbox',
    'PAYSTACK_PUBLIC_KEY': 'pk_test_billvend_sandbox',
    'PAYSTACK_WEBHOOK_URL': 'http://127.0.0.1:5000/webhooks/paystack',
    'PAYSTACK_CONNECT_TIMEOUT_SECONDS': 5.0,
    'PAYSTACK_READ_TIMEOUT_SECONDS': 10.0,
    'PAYSTACK_DEADLINE_SECONDS': 12.0,
    'PAYSTACK_PREFERRED_BANK': 'test-bank',
    'FUNDING_VERIFY_AFTER_SECONDS': 180,
    'FUNDING_VERIFY_BASE_DELAY_SECONDS': 60.0,
    'FUNDING_VERIFY_MAX_DELAY_SECONDS': 3600.0,
    'FUNDING_GIVE_UP_SECONDS': 3600,
    'FUNDING_EXPIRE_SECONDS': 86400,
    'FUNDING_RECONCILE_DAYS': 2,
    'FUNDING_RECHECK_FAILED_DAYS': 7,
    'WEBHOOK_MAX_BYTES': 65536,
    'PAYSTACK_SANDBOX_BALANCE_KOBO': 100_000_000_000,
    'PAYSTACK_SANDBOX_TRANSFER_REVERSE_SECONDS': 10.0,
    'PAYSTACK_SANDBOX_TRANSFER_SETTLE_SECONDS': 2.0,
    'PAYSTACK_SANDBOX_WEBHOOK': 'normal',
    'PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS': 5.0,
    'PAYSTACK_SANDBOX_ABANDON_SECONDS': 1800.0,
    'MIN_FUNDING_KOBO': 10000,
    'MAX_FUNDING_KOBO': 100000000,
    'MIN_PAYMENT_KOBO': 50000,
    'MAX_PAYMENT_KOBO': 50000000,
    'PAYMENTS_PER_PAGE': 20,
}

#: The one setting issue 22 adds: where the sandbox listens (and both
#: providers' base URLs default to).
NEW_IN_ISSUE_22 = {"SANDBOX_URL": "http://127.0.0.1:5055"}
#: Issue 27: transfers between customers and their daily limits (kobo).
NEW_IN_ISSUE_27 = {"TRANSFER_DAILY_LIMIT_KOBO": 50_000_000, "UNVERIFIED_DAILY_LIMIT_KOBO": 5_000_000,
                   "TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR": 10,
                   "RATELIMIT_TRANSFER_USER": "10 per minute;100 per day",
                   "MIN_P2P_TRANSFER_KOBO": 100, "MAX_P2P_TRANSFER_KOBO": 500_000_000,
                   # admin adjustments and bonuses (four-eyes)
                   "MIN_ADJUSTMENT_KOBO": 1, "MAX_ADJUSTMENT_KOBO": 100_000_000,
                   "ADJUSTMENT_TTL_SECONDS": 24 * 3600}
DEFAULTS = TODAYS_DEFAULTS | NEW_IN_ISSUE_22 | NEW_IN_ISSUE_27

#: ``int(raw or default)``: empty is unset; whitespace only, a fraction or a
#: word raise ValueError (no number falls back to its default).
INT_OR_DEFAULT = [
    "WORKER_CONCURRENCY", "PAYSTACK_SANDBOX_BALANCE_KOBO", "METER_VERIFICATION_TTL_SECONDS", "METER_VERIFICATION_INVALID_TTL_SECONDS",
    "STATUS_LONG_POLLS_PER_USER", "STATUS_FAST_PHASE_SECONDS", "VTPASS_SEND_ATTEMPTS",
    "SWEEP_INTERVAL_SECONDS", "PENDING_GRACE_SECONDS", "VENDING_LEASE_SECONDS", "UNKNOWN_ALERT_AGE_SECONDS",
    "SWEEP_LOCK_SECONDS", "SLOW_PAYMENT_NOTICE_SECONDS", "FUNDING_VERIFY_AFTER_SECONDS",
    "FUNDING_GIVE_UP_SECONDS", "FUNDING_EXPIRE_SECONDS", "FUNDING_RECONCILE_DAYS", "FUNDING_RECHECK_FAILED_DAYS",
    "WEBHOOK_MAX_BYTES",
    "WEB_THREADS", "DATABASE_POOL_SIZE", "NOTIFY_CONCURRENCY", "NOTIFY_ATTEMPTS", "NOTIFY_CLAIM_SECONDS",
    "TOKEN_RESEND_HOURLY_LIMIT", "TOKEN_RESEND_DAILY_LIMIT",
    "TRANSFER_DAILY_LIMIT_KOBO", "UNVERIFIED_DAILY_LIMIT_KOBO", "TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR",
]
#: ``int(raw)`` unless empty or whitespace only (both unset).
INT_BLANK_DEFAULT = [
    "TRUSTED_PROXY_HOPS", "MAX_CONTENT_LENGTH", "MAX_FORM_MEMORY_SIZE", "MAX_FORM_PARTS",
    "ADMIN_SESSION_IDLE_SECONDS", "ADMIN_SESSION_ABSOLUTE_SECONDS", "CUSTOMER_SESSION_IDLE_SECONDS",
    "CUSTOMER_SESSION_ABSOLUTE_SECONDS", "REMEMBER_ME_SECONDS", "ANONYMOUS_SESSION_SECONDS",
    "FRESH_LOGIN_SECONDS",
]
#: ``float(raw or default)``: empty is unset; a word raises ValueError.
FLOAT_OR_DEFAULT = [
    "METER_VERIFICATION_DEADLINE_SECONDS", "STATUS_LONG_POLL_SECONDS", "SIMULATOR_SUCCESS_RATE",
    "SIMULATOR_DELAY_SECONDS", "VTPASS_CONNECT_TIMEOUT_SECONDS", "VTPASS_READ_TIMEOUT_SECONDS",
    "VTPASS_VERIFY_TIMEOUT_SECONDS", "VTPASS_DEADLINE_SECONDS", "SANDBOX_TIMEOUT_SLEEP_SECONDS",
    "SANDBOX_DRIP_SECONDS", "SANDBOX_DRIP_INTERVAL_SECONDS", "SANDBOX_LATE_RECORD_SECONDS",
    "REQUERY_BASE_DELAY_SECONDS", "REQUERY_MAX_DELAY_SECONDS", "PROVIDER_NOT_FOUND_GRACE_SECONDS",
    "PAYSTACK_CONNECT_TIMEOUT_SECONDS", "PAYSTACK_READ_TIMEOUT_SECONDS", "PAYSTACK_DEADLINE_SECONDS",
    "FUNDING_VERIFY_BASE_DELAY_SECONDS", "FUNDING_VERIFY_MAX_DELAY_SECONDS",
    "PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS", "PAYSTACK_SANDBOX_ABANDON_SECONDS",
    "PAYSTACK_SANDBOX_TRANSFER_SETTLE_SECONDS", "PAYSTACK_SANDBOX_TRANSFER_REVERSE_SECONDS",
    "SMTP_DEADLINE_SECONDS", "NOTIFY_RETRY_BASE_SECONDS", "NOTIFY_RETRY_MAX_SECONDS",
    "SMS_CONNECT_TIMEOUT_SECONDS", "SMS_READ_TIMEOUT_SECONDS", "SMS_DEADLINE_SECONDS",
    "FAULT_SEND_DELAY_SECONDS",
]
#: ``raw or default`` (default ``None`` for the optional ones): kept as given.
TEXT_OR_DEFAULT = [
    "RATELIMIT_KEY_PREFIX", "RATELIMIT_LOGIN_ACCOUNT_IP", "RATELIMIT_LOGIN_IP", "RATELIMIT_LOGIN_ACCOUNT",
    "RATELIMIT_SIGNUP_IP", "RATELIMIT_VERIFY_USER", "RATELIMIT_VERIFY_IP", "RATELIMIT_VERIFY_DISTINCT_METERS",
    "RATELIMIT_PAYMENT_USER", "RATELIMIT_FUNDING_USER", "RATELIMIT_TWO_FACTOR",
    "RATELIMIT_PASSWORD_RESET_EMAIL", "RATELIMIT_PASSWORD_RESET_IP", "RATELIMIT_EMAIL_VERIFICATION_USER",
    "RATELIMIT_PHONE_CODE_USER", "RATELIMIT_PHONE_CODE_PHONE", "RATELIMIT_TRANSFER_USER",
    "RATELIMIT_WEBHOOK_IP", "HUEY_NAME", "HUEY_SQLITE_PATH",
    "VENDING_PROVIDER", "VTPASS_BASE_URL", "VTPASS_API_KEY", "VTPASS_SECRET_KEY", "SANDBOX_STATE_PATH",
    "HTMX_URL", "SUPPORT_CONTACT", "PAYSTACK_SECRET_KEY", "PAYSTACK_PUBLIC_KEY", "PAYSTACK_PREFERRED_BANK",
    "PAYSTACK_SANDBOX_WEBHOOK", "SANDBOX_URL", "SECRET_KEY", "PAYSTACK_CHECKOUT_URL", "METRICS_TOKEN",
    "PROMETHEUS_MULTIPROC_DIR", "REDIS_URL", "SMTP_URL", "MAIL_FROM", "SMS_API_KEY", "SMS_SENDER_ID",
]
#: ``1/true/yes/on`` (any case, spaces around) is true, anything else given is false.
FLAGS = ["RATELIMIT_ENABLED", "HUEY_IMMEDIATE", "FAULT_SKIP_ENQUEUE"]

RAISES = object()


def _simple_cases():
    for name in INT_OR_DEFAULT:
        yield from [({name: ""}, {name: DEFAULTS[name]}), ({name: "7"}, {name: 7}),
                    ({name: " 7 "}, {name: 7}), ({name: "0"}, {name: 0}), ({name: "   "}, RAISES),
                    ({name: "1.5"}, RAISES), ({name: "ten"}, RAISES)]
    for name in INT_BLANK_DEFAULT:
        yield from [({name: ""}, {name: DEFAULTS[name]}), ({name: "   "}, {name: DEFAULTS[name]}),
                    ({name: "7"}, {name: 7}), ({name: "-3"}, {name: -3}), ({name: "1.5"}, RAISES),
                    ({name: "ten"}, RAISES)]
    for name in FLOAT_OR_DEFAULT:
        yield from [({name: ""}, {name: DEFAULTS[name]}), ({name: "2.5"}, {name: 2.5}),
                    ({name: "7"}, {name: 7.0}), ({name: "0"}, {name: 0.0}), ({name: "1e3"}, {name: 1000.0}),
                    ({name: "soon"}, RAISES), ({name: "   "}, RAISES)]
    for name in TEXT_OR_DEFAULT:
        yield from [({name: ""}, {name: DEFAULTS[name]}), ({name: "x y"}, {name: "x y"}),
                    ({name: " padded "}, {name: " padded "})]
    for name in FLAGS:
        yield from [({name: ""}, {name: DEFAULTS[name]})]
        yield from [({name: raw}, {name: True}) for raw in ("1", "true", "YES", " on ")]
        yield from [({name: raw}, {name: False}) for raw in ("0", "false", "no", "off", "maybe", "  ")]


PROD = {"BILLVEND_ENV": "production"}
SPECIAL_CASES = [
    # The environment: stripped and lower-cased; anything else is refused.
    ({"BILLVEND_ENV": ""}, {"BILLVEND_ENV": "development", "SESSION_COOKIE_SECURE": False}),
    ({"BILLVEND_ENV": " Production "}, {"BILLVEND_ENV": "production", "SESSION_COOKIE_SECURE": True,
                                        "REQUIRE_SECRET_KEY": True, "TRUSTED_PROXY_HOPS": None,
                                        "LOG_FORMAT": "json"}),
    ({"BILLVEND_ENV": "staging"}, RAISES),
    # The database: Heroku's postgres:// and postgresql:// get the psycopg 3 driver.
    ({"DATABASE_URL": ""}, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{INSTANCE_DIR / 'billvend.sqlite3'}",
                            "REQUIRE_SECRET_KEY": False}),
    ({"DATABASE_URL": "postgres://u:p@h/db"}, {"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://u:p@h/db",
                                               "REQUIRE_SECRET_KEY": True}),
    ({"DATABASE_URL": "postgresql://u@h/db"}, {"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://u@h/db"}),
    ({"DATABASE_URL": "sqlite:///:memory:"}, {"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:",
                                              "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True}}),
    ({"DATABASE_URL": "sqlite:///x.db", "DATABASE_POOL_SIZE": "3"},
     {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True, "pool_size": 3, "max_overflow": 0,
                                    "pool_timeout": 30}}),
    # Pool size follows WEB_THREADS up to 6 unless given.
    ({"WEB_THREADS": "4"}, {"WEB_THREADS": 4, "DATABASE_POOL_SIZE": 4}),
    ({"WEB_THREADS": "40"}, {"WEB_THREADS": 40, "DATABASE_POOL_SIZE": 6}),
    ({"WEB_THREADS": "4", "DATABASE_POOL_SIZE": "9"}, {"DATABASE_POOL_SIZE": 9}),
    # A Redis URL: the secret key becomes required and rate limits share it.
    ({"REDIS_URL": "redis://r:6379/0"}, {"REDIS_URL": "redis://r:6379/0", "REQUIRE_SECRET_KEY": True,
                                         "RATELIMIT_STORAGE_URI": "redis://r:6379/0",
                                         "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 2,
                                                                       "socket_timeout": 2}}),
    ({"REDIS_URL": "redis://r/0", "RATELIMIT_STORAGE_URI": "memcached://m:11211"},
     {"RATELIMIT_STORAGE_URI": "memcached://m:11211", "RATELIMIT_STORAGE_OPTIONS": {}}),
    ({"RATELIMIT_STORAGE_URI": "rediss://r/1"}, {"RATELIMIT_STORAGE_URI": "rediss://r/1", "REDIS_URL": None,
                                                 "REQUIRE_SECRET_KEY": False,
                                                 "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 2,
                                                                               "socket_timeout": 2}}),
    ({"RATELIMIT_STORAGE_URI": ""}, {"RATELIMIT_STORAGE_URI": "memory://"}),
    # The public address: trailing slashes and spaces go; production trusts its host only.
    ({"PUBLIC_BASE_URL": " https://billvend.ng/ "}, {"PUBLIC_BASE_URL": "https://billvend.ng",
                                                     "TRUSTED_HOSTS": None}),
    ({"PUBLIC_BASE_URL": "  "}, {"PUBLIC_BASE_URL": None}),
    ({"PUBLIC_BASE_URL": ""}, {"PUBLIC_BASE_URL": None}),
    (PROD | {"PUBLIC_BASE_URL": "https://Billvend.ng:8443/"}, {"TRUSTED_HOSTS": ["billvend.ng"]}),
    (PROD | {"PUBLIC_BASE_URL": "https://billvend.ng", "TRUSTED_HOSTS": "a.ng, ,b.ng"},
     {"TRUSTED_HOSTS": ["a.ng", "b.ng"]}),
    ({"TRUSTED_HOSTS": " , "}, {"TRUSTED_HOSTS": None}),
    ({"TRUSTED_HOSTS": ""}, {"TRUSTED_HOSTS": None}),
    ({"TRUSTED_HOSTS": "a.ng"}, {"TRUSTED_HOSTS": ["a.ng"]}),
    (PROD | {"TRUSTED_PROXY_HOPS": "1"}, {"TRUSTED_PROXY_HOPS": 1}),
    # Log format: lower-cased; production's default is json.
    ({"LOG_FORMAT": "JSON"}, {"LOG_FORMAT": "json"}),
    (PROD | {"LOG_FORMAT": "Text"}, {"LOG_FORMAT": "text"}),
    ({"LOG_FORMAT": ""}, {"LOG_FORMAT": "text"}),
    # The gateway: only two names; Paystack's base URL loses trailing slashes.
    ({"FUNDING_GATEWAY": ""}, {"FUNDING_GATEWAY": "paystack"}),
    ({"FUNDING_GATEWAY": "simulated"}, {"FUNDING_GATEWAY": "simulated"}),
    ({"FUNDING_GATEWAY": "Paystack"}, RAISES),
    ({"PAYSTACK_BASE_URL": "https://api.paystack.co//"}, {"PAYSTACK_BASE_URL": "https://api.paystack.co"}),
    ({"PAYSTACK_BASE_URL": ""}, {"PAYSTACK_BASE_URL": "http://127.0.0.1:5055"}),
    # SMS: Termii's shape only; the gateway is the sandbox unless told.
    ({"SMS_PROVIDER": ""}, {"SMS_PROVIDER": "termii"}),
    ({"SMS_PROVIDER": "twilio"}, RAISES),
    ({"SMS_BASE_URL": "https://api.ng.termii.com/"}, {"SMS_BASE_URL": "https://api.ng.termii.com"}),
    ({"SMS_BASE_URL": ""}, {"SMS_BASE_URL": "http://127.0.0.1:5055"}),
    ({"SANDBOX_URL": "http://127.0.0.1:6000"}, {"SMS_BASE_URL": "http://127.0.0.1:6000"}),
    # The sandbox's webhooks go to the web process's PORT unless told.
    ({"PORT": "8000"}, {"PAYSTACK_WEBHOOK_URL": "http://127.0.0.1:8000/webhooks/paystack"}),
    ({"PORT": ""}, {"PAYSTACK_WEBHOOK_URL": "http://127.0.0.1:5000/webhooks/paystack"}),
    ({"PORT": "8000", "PAYSTACK_WEBHOOK_URL": "https://hook.example/p"},
     {"PAYSTACK_WEBHOOK_URL": "https://hook.example/p"}),
    ({"PAYSTACK_WEBHOOK_URL": ""}, {"PAYSTACK_WEBHOOK_URL": "http://127.0.0.1:5000/webhooks/paystack"}),
    # Requery delays after a refund: sorted seconds; blanks skipped; bad ones refused.
    ({"REQUERY_AFTER_REFUND_DELAYS_SECONDS": ""}, {"REQUERY_AFTER_REFUND_DELAYS_SECONDS": (3600.0, 86400.0)}),
    ({"REQUERY_AFTER_REFUND_DELAYS_SECONDS": "  "}, {"REQUERY_AFTER_REFUND_DELAYS_SECONDS": (3600.0, 86400.0)}),
    ({"REQUERY_AFTER_REFUND_DELAYS_SECONDS": "600, 60,,"}, {"REQUERY_AFTER_REFUND_DELAYS_SECONDS": (60.0, 600.0)}),
    ({"REQUERY_AFTER_REFUND_DELAYS_SECONDS": ","}, {"REQUERY_AFTER_REFUND_DELAYS_SECONDS": ()}),
    ({"REQUERY_AFTER_REFUND_DELAYS_SECONDS": "60,soon"}, ConfigError),
    ({"REQUERY_AFTER_REFUND_DELAYS_SECONDS": "-1"}, ConfigError),
    ({"REQUERY_AFTER_REFUND_DELAYS_SECONDS": "nan"}, ConfigError),
]
#: Every variable the configuration reads, each covered above.
EVERY_VARIABLE = (set(INT_OR_DEFAULT) | set(INT_BLANK_DEFAULT) | set(FLOAT_OR_DEFAULT) | set(TEXT_OR_DEFAULT)
                  | set(FLAGS) | {"BILLVEND_ENV", "DATABASE_URL", "RATELIMIT_STORAGE_URI", "PUBLIC_BASE_URL",
                                  "TRUSTED_HOSTS", "LOG_FORMAT", "FUNDING_GATEWAY", "PAYSTACK_BASE_URL",
                                  "PORT", "PAYSTACK_WEBHOOK_URL", "REQUERY_AFTER_REFUND_DELAYS_SECONDS",
                                  "SMS_PROVIDER", "SMS_BASE_URL"})
PARSE_CASES = list(_simple_cases()) + SPECIAL_CASES


def _same(got, want):
    """Equal and of the same type (7 is not 7.0 here), NaN equal to NaN."""
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, (list, tuple)):
        return type(got) is type(want) and len(got) == len(want) and all(map(_same, got, want))
    if isinstance(want, dict):
        return type(got) is dict and got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def test_with_nothing_set_every_config_value_is_todays_default():
    config = from_env({})
    assert sorted(config) == sorted(DEFAULTS)  # the same keys (their order is no behaviour)
    assert [k for k in config if not _same(config[k], DEFAULTS[k])] == []


@pytest.mark.parametrize("env,expected", PARSE_CASES, ids=lambda v: repr(v)[:60] if isinstance(v, dict) else None)
def test_every_setting_parses_as_before(env, expected):
    if expected is RAISES or expected is ConfigError:
        with pytest.raises(ConfigError if expected is ConfigError else ValueError):
            from_env(env)
        return
    config = from_env(env)
    assert {k: config[k] for k in expected} == expected
    assert [k for k in expected if not _same(config[k], expected[k])] == []
    # Nothing else moved: every value not named keeps its default (or what
    # the named input legitimately changes, e.g. production's cookies).
    if not any(k in env for k in ("BILLVEND_ENV", "SANDBOX_URL", "DATABASE_URL", "REDIS_URL", "WEB_THREADS",
                                  "DATABASE_POOL_SIZE", "RATELIMIT_STORAGE_URI")):
        moved = {k for k in config if not _same(config[k], DEFAULTS[k])}
        assert moved <= set(expected), moved


def test_the_parse_table_covers_every_variable():
    covered = {name for env, _ in PARSE_CASES for name in env}
    assert covered == EVERY_VARIABLE
    # ... each with an empty value among its cases (empty means unset).
    assert {name for env, _ in PARSE_CASES for name, raw in env.items() if raw == ""} == EVERY_VARIABLE


def test_the_declared_table_is_every_variable_read():
    from billvend.platform.config import Settings

    assert set(Settings.model_fields) == EVERY_VARIABLE
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no one-line meaning"


def test_only_the_config_module_reads_the_environment():
    readers = [path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "billvend").rglob("*.py"))
               if re.search(r"os\.environ|getenv\(", path.read_text())]
    assert readers == ["billvend/platform/config.py"]


def test_docs_configuration_md_is_what_the_declaration_generates():
    from billvend.platform.config import configuration_markdown

    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == configuration_markdown(), (
        "docs/configuration.md is stale: flask --app wsgi config docs > docs/configuration.md")


@pytest.mark.once
def test_flask_config_docs_prints_the_generated_table():
    from billvend.platform.config import configuration_markdown

    result = subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "config", "docs"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == configuration_markdown()
