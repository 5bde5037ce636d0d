"""Review of issue 15's money-in code: attacks that found a defect."""

from __future__ import annotations

import json
import requests
import sqlalchemy as sa

from billvend.extensions import db
from billvend.funding import gateways
from billvend.models import GatewayEvent
from tests.test_funding import SECRET, live  # noqa: F401


def test_a_non_ascii_signature_header_is_401_not_500(live):
    base, sandbox = live
    body = json.dumps({"event": "charge.success", "data": {"reference": "T_1", "status": "success"}}).encode()
    for signature in ("\u00e9" * 128, gateways.sign(SECRET, body)[:-1] + "\u00ff"):
        r = requests.post(base + "/webhooks/paystack", data=body, timeout=10,
                          headers={"Content-Type": "application/json",
                                   "x-paystack-signature": signature.encode("latin-1")})
        assert r.status_code == 401, r.text
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(GatewayEvent.id))) == 0


def test_gateway_amounts_in_unicode_digits_are_unusable_not_a_crash():
    for raw in ("\u00b2", "\u0661\u0662", "5\u00b2"):
        tx = gateways.transaction_from({"reference": "R", "status": "success", "amount": raw,
                                        "fees": raw})
        assert tx.amount_kobo is None and tx.fees_kobo is None
    assert gateways.transaction_from({"reference": "R", "status": "success", "amount": "500"}).amount_kobo == 500
