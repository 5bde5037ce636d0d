"""Configuration from the environment, and the timings it must respect."""

import pytest

from billvend import create_app
from billvend.config import check_timings, from_env


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
    from billvend.config import longest_vend_seconds, vend_deadline_seconds

    config = from_env({"VENDING_PROVIDER": "vtpass"})
    assert vend_deadline_seconds(config) == longest_vend_seconds(config) == 3 * (5 + 1) + 30
    assert from_env({})["PROVIDER_NOT_FOUND_GRACE_SECONDS"] == 120
    short = from_env({"VENDING_PROVIDER": "vtpass", "VTPASS_DEADLINE_SECONDS": "20",
                      "VENDING_LEASE_SECONDS": "25"})
    check_timings(short)  # a 20 s deadline fits in a 25 s lease
    with pytest.raises(ValueError, match="VENDING_LEASE_SECONDS"):
        check_timings(short | {"VTPASS_DEADLINE_SECONDS": 25.0})
