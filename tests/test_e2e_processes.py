"""End to end over HTTP against the real processes of the Procfile.

The Procfile's ``release`` (``flask db upgrade``) builds the database from the
migrations, then its ``web`` (gunicorn, on a free port) and ``worker``
(``huey_consumer`` on SqliteHuey) start; the test signs up, funds, pays and
polls the status partial until the token appears. ``make run`` starts the same
two entries with honcho.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.stack import Stack

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
KEY_RE = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')


@pytest.fixture
def stack(tmp_path):
    with Stack(tmp_path, {"SIMULATOR_SUCCESS_RATE": "1"}) as running:
        running.migrate()
        running.start("web")
        running.start("worker")
        yield running.base_url


def tokens(session: requests.Session, url: str) -> dict[str, str]:
    html = session.get(url, timeout=5).text
    data = {"csrf_token": CSRF_RE.search(html).group(1)}
    key = KEY_RE.search(html)
    if key:
        data["idempotency_key"] = key.group(1)
    return data


@pytest.mark.once
def test_sign_up_fund_pay_token_over_http(stack):
    s = requests.Session()
    r = s.post(stack + "/signup", data=tokens(s, stack + "/signup") | {
        "email": "e2e@example.com", "password": "correct horse 1", "confirm_password": "correct horse 1"})
    assert r.status_code == 200 and "Wallet balance" in r.text
    r = s.post(stack + "/wallet/fund", data=tokens(s, stack + "/wallet/fund") | {"amount": "10000"})
    assert "₦10,000.00" in r.text
    r = s.post(stack + "/bills/electricity", data=tokens(s, stack + "/bills/electricity") | {
        "disco": "abuja-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
        "amount": "2500", "phone": "08031234567",
        "verified_meter": "abuja-electric:prepaid:1111111111111"}, allow_redirects=False)
    assert r.status_code == 303
    payment_url = stack + r.headers["Location"]
    assert s.get(payment_url, timeout=5).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        partial = s.get(payment_url + "/status", headers={"HX-Request": "true"}, timeout=5).text
        if 'data-status="successful"' in partial:
            break
        time.sleep(0.25)
    else:
        pytest.fail("no token within 30 s:\n" + partial)
    token = re.search(r"(\d{4}-\d{4}-\d{4}-\d{4}-\d{4})", partial)
    assert token, partial
    assert "hx-trigger" not in partial
    assert "₦7,500.00" in s.get(stack + "/", timeout=5).text
    assert s.get(stack + "/static/vendor/htmx.min.js", timeout=5).status_code == 200
