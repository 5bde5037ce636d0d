"""``make run`` with ``VENDING_PROVIDER=vtpass``: the Procfile's web, worker
and sandbox processes over real sockets. The timeout meter ends successful
(requeried by the worker's scheduled task, one pay call); the no-response
meter ends refunded."""

from __future__ import annotations

import re
import time

import pytest
import requests

from tests.stack import Stack, free_port
from tests.test_e2e_processes import tokens


def wait_for(predicate, timeout_seconds: float = 30):
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    return None


@pytest.fixture
def stack(tmp_path):
    sandbox_url = f"http://127.0.0.1:{free_port()}"
    env = {
        "VENDING_PROVIDER": "vtpass", "SANDBOX_URL": sandbox_url,
        "VTPASS_READ_TIMEOUT_SECONDS": "2", "SANDBOX_TIMEOUT_SLEEP_SECONDS": "4",
        "REQUERY_BASE_DELAY_SECONDS": "1", "SIMULATOR_SUCCESS_RATE": "1",
        "PROVIDER_NOT_FOUND_GRACE_SECONDS": "1",
    }
    with Stack(tmp_path, env) as running:
        running.migrate()
        running.start("sandbox")

        def sandbox_up():
            try:
                return requests.get(sandbox_url + "/", timeout=1).ok
            except requests.RequestException:
                return False

        assert wait_for(sandbox_up, 20), running.log("sandbox")
        running.start("web")
        running.start("worker")
        yield running.base_url, sandbox_url


def pay(s: requests.Session, base: str, meter: str) -> str:
    r = s.post(base + "/bills/electricity", data=tokens(s, base + "/bills/electricity") | {
        "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": meter,
        "amount": "1000", "phone": "08031234567",
        "verified_meter": f"ikeja-electric:prepaid:{meter}"}, allow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["Location"]


@pytest.mark.once
def test_timeout_and_no_response_meters_over_real_processes(stack):
    base, sandbox_url = stack
    s = requests.Session()
    s.post(base + "/signup", data=tokens(s, base + "/signup") | {
        "email": "vt@example.com", "password": "correct horse 1", "confirm_password": "correct horse 1"})
    s.post(base + "/wallet/fund", data=tokens(s, base + "/wallet/fund") | {"amount": "5000"})
    timeout_url = pay(s, base, "300000000000")
    no_response_url = pay(s, base, "400000000000")

    def final(url):
        html = s.get(base + url + "/status", headers={"HX-Request": "true"}, timeout=5).text
        match = re.search(r'data-status="(successful|reversed)"', html)
        return match and (match.group(1), html)

    status, html = wait_for(lambda: final(timeout_url)) or pytest.fail("timeout meter never settled")
    # The customer reads plain words; provider codes stay on the admin page.
    assert status == "successful" and re.search(r"\d{4}(-\d{4}){4}", html.replace("<wbr>", ""))
    assert "Waiting for the disco to confirm" in html and "TIMEOUT" not in html
    status, html = wait_for(lambda: final(no_response_url)) or pytest.fail("no-response meter never settled")
    assert status == "reversed" and "has been refunded to your wallet" in html and "NOT_FOUND" not in html
    for url in (timeout_url, no_response_url):
        order = requests.get(f"{sandbox_url}/sandbox/orders/{url.rsplit('/', 1)[1]}", timeout=5).json()
        assert order["pay_calls"] == 1
    assert "₦4,000.00" in s.get(base + "/", timeout=5).text  # one debit kept, one refunded
