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
