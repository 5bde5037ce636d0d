"""The simulated provider's outcome per deterministic test meter."""

import secrets

import pytest
import sqlalchemy as sa

from billvend.platform.extensions import db
from billvend.vending.models import SimulatorOrder
from billvend.vending.providers.simulated import SimulatedProvider


@pytest.fixture
def sim(app):
    return SimulatedProvider(db.engine, success_rate=0.8, delay_seconds=0)


def order(sim, meter, meter_type="prepaid", amount_kobo=500_000):
    request_id = "202611220900" + secrets.token_hex(6)
    return request_id, sim.vend(request_id, "ikeja-electric", meter, meter_type, amount_kobo, "08031234567")


@pytest.mark.parametrize("meter,meter_type,first,first_code,final", [
    ("1111111111111", "prepaid", "delivered", "delivered", "delivered"),
    ("1010101010101", "postpaid", "delivered", "delivered", "delivered"),
    ("201000000000", "prepaid", "pending", "PROCESSING", "delivered"),
    ("300000000000", "prepaid", "pending", "TIMEOUT", "delivered"),
    ("400000000000", "prepaid", "pending", "NO_RESPONSE", "failed"),
    ("500000000000", "prepaid", "pending", "UNEXPECTED_RESPONSE", "delivered"),
    ("0000000000000", "prepaid", "failed", "INVALID_ACCOUNT", "failed"),
])
def test_test_meters(sim, meter, meter_type, first, first_code, final):
    request_id, result = order(sim, meter, meter_type)
    assert (result.status, result.code) == (first, first_code)
    requeried = sim.requery(request_id)
    assert requeried.status == final
    if final == "delivered" and meter_type == "prepaid":
        assert len(requeried.token) == 20 and requeried.token.isdigit()
        assert requeried.units_kwh == "22.4"  # ₦5,000 less 7.5% VAT at ₦206.80/kWh
    if meter_type == "postpaid":
        assert requeried.token is None and requeried.receipt_reference
    if meter == "400000000000":
        assert requeried.code == "NOT_FOUND"


def test_same_request_id_is_one_order(sim):
    request_id, first = order(sim, "1111111111111")
    again = sim.vend(request_id, "ikeja-electric", "1111111111111", "prepaid", 500_000, "08031234567")
    assert again.status == "pending" and again.code == "DUPLICATE_REQUEST"
    stored = db.session.get(SimulatorOrder, request_id)
    assert stored.pay_calls == 2
    assert sim.requery(request_id).token == first.token


def test_unknown_request_id(sim):
    assert sim.requery("202611220900nothere").code == "NOT_FOUND"


def test_success_rate(app):
    always = SimulatedProvider(db.engine, success_rate=1.0, delay_seconds=0)
    never = SimulatedProvider(db.engine, success_rate=0.0, delay_seconds=0)
    assert all(order(always, "12345678901")[1].status == "delivered" for _ in range(20))
    outcomes = [order(never, "12345678901")[1] for _ in range(30)]
    assert all(r.status != "delivered" for r in outcomes)
    assert {r.code for r in outcomes} <= {"SERVICE_UNAVAILABLE", "INSUFFICIENT_CREDIT", "TIMEOUT"}
    default = SimulatedProvider(db.engine, delay_seconds=0)
    delivered = sum(order(default, "12345678901")[1].status == "delivered" for _ in range(200))
    assert 130 <= delivered <= 190  # 80% of 200, with generous sampling slack
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SimulatorOrder)) == 250


def test_verify_meter(sim):
    valid = sim.verify_meter("ikeja-electric", "1111111111111", "prepaid")
    assert valid.is_valid and valid.customer_name and valid.address
    assert sim.verify_meter("ikeja-electric", "1111111111111", "prepaid") == valid  # stable
    assert sim.verify_meter("ikeja-electric", "0000000000000", "prepaid").status == "invalid"
    assert sim.verify_meter("ikeja-electric", "1111111111111", "postpaid").status == "invalid"
