"""Phones are stored E.164, Nigerian mobiles only (issue 23,
billvend.platform.phones); each outside system gets its own spelling."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from billvend.accounts.models import User
from billvend.platform.extensions import db
from tests.test_admin import csrf_of
from billvend.platform.phones import display, international_digits, national, to_e164


@pytest.mark.parametrize("typed", ["08031234567", "0803 123 4567", "0803-123-4567", "+234 803 123 4567",
                                   "2348031234567", "+2348031234567", "(0803) 123 4567"])
def test_every_way_of_writing_a_nigerian_mobile_is_stored_e164(typed):
    assert to_e164(typed) == "+2348031234567"


@pytest.mark.parametrize("typed", [
    "", None, "12", "0803123456",         # too short
    "080312345678",                       # too long
    "0201 888 0000",                      # a Lagos landline: no SMS reaches it
    "+447911123456",                      # a UK mobile
    "08031234567x", "phone", "+234" + "8" * 40,
])
def test_anything_but_a_nigerian_mobile_is_refused(typed):
    assert to_e164(typed) is None


def test_vtpass_and_pages_get_the_national_form_termii_the_digits():
    assert national("+2348031234567") == "08031234567"
    assert international_digits("+2348031234567") == "2348031234567"
    assert display("+2348031234567") == "08031234567"
    assert national("0803") == "0803" and display(None) == ""


def test_the_profile_stores_e164_and_refuses_a_landline(client, customer):
    user = customer
    saved = client.post("/account", data={"full_name": "Ada Obi", "phone": "0803 123 4567",
                                          "csrf_token": csrf_of(client, "/account")})
    assert saved.status_code == 303
    assert db.session.scalar(sa.select(User.phone).where(User.id == user.id)) == "+2348031234567"
    landline = client.post("/account", data={"full_name": "Ada Obi", "phone": "01 271 0000",
                                             "csrf_token": csrf_of(client, "/account")})
    assert landline.status_code == 422 and b"Nigerian mobile number" in landline.data
    assert db.session.scalar(sa.select(User.phone).where(User.id == user.id)) == "+2348031234567"


def test_a_payment_stores_e164_and_its_page_shows_0803(client, customer, pay):
    from billvend.vending.models import Payment

    response = pay(phone="0803 123 4567")
    assert response.status_code in (302, 303), response.status_code
    payment = db.session.scalar(sa.select(Payment))
    assert payment.phone == "+2348031234567"
    assert "<dd>08031234567</dd>" in client.get(response.headers["Location"]).get_data(as_text=True)
