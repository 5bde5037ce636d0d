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


# --- Production refuses unsafe configurations (issue 21, item 3) --------------------

import re  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from billvend.platform.config import (  # noqa: E402
    ConfigError, check_production, is_loopback_url, resolve_secret_key, secret_key_bits,
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
                                  "PUBLIC_BASE_URL"])
@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "[::1]", "[::ffff:127.0.0.1]",
                                  "localhost.", "anything.localhost"])
def test_production_refuses_a_loopback_base_url_in_any_spelling(name, host):
    with pytest.raises(ConfigError, match=re.escape(f"loopback {name}")):
        production_check(PRODUCTION | {name: f"https://{host}:5055"})
    production_check(PRODUCTION | {name: f"https://{host}:5055", "BILLVEND_ENV": "development"})


@pytest.mark.parametrize("name", ["VTPASS_BASE_URL", "PAYSTACK_BASE_URL", "PAYSTACK_CHECKOUT_URL",
                                  "PUBLIC_BASE_URL"])
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
