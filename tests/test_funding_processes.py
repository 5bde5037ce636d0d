"""Money in with the real processes of the Procfile (gunicorn ``web``, the
``sandbox``; the ``flask funding`` commands as a person or cron runs them):
the web process is SIGKILLed after the gateway took the money and before
anything was credited; reconciliation (``flask funding reconcile``) credits
it exactly once, and the customer's late return to the restarted web changes
nothing."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from datetime import datetime

import pytest
import requests

from billvend.vending.lifecycle import LAGOS
from tests.conftest import CSRF_RE, KEY_RE
from tests.stack import ROOT, Stack, free_port

pytestmark = pytest.mark.once


def tokens(s, url):
    html = s.get(url, timeout=10).text
    match = CSRF_RE.search(html)
    data = {"csrf_token": match.group(1) or match.group(2)}
    key = KEY_RE.search(html)
    if key:
        data["idempotency_key"] = key.group(1)
    return data


def flask(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv/bin/flask"), "--app", "wsgi", *args], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=120)


def balance(s, base) -> str:
    return re.search(r'data-testid="balance">([^<]+)<', s.get(base + "/", timeout=10).text).group(1)


def test_web_killed_after_the_gateway_took_the_money_reconciliation_credits_once(tmp_path):
    sandbox_url = f"http://127.0.0.1:{free_port()}"
    with Stack(tmp_path, {"FUNDING_GATEWAY": "paystack", "SANDBOX_URL": sandbox_url,
                          "PAYSTACK_SANDBOX_WEBHOOK": "never"}) as stack:
        stack.migrate()
        stack.start("sandbox")
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(sandbox_url, timeout=2)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, stack.log("sandbox")
                time.sleep(0.2)
        stack.start("web")
        base = stack.base_url
        s = requests.Session()
        s.post(base + "/signup", data=tokens(s, base + "/signup") | {
            "email": "kill@example.com", "password": "correct horse 1",
            "confirm_password": "correct horse 1"}, timeout=10)
        r = s.post(base + "/wallet/fund", data=tokens(s, base + "/wallet/fund") | {"amount": "4000"},
                   allow_redirects=False, timeout=15)
        checkout = r.headers["Location"]
        paid = s.post(checkout, data={"outcome": "success"}, allow_redirects=False, timeout=15)
        callback = paid.headers["Location"]
        stack.stop("web", signal.SIGKILL)  # dies before the customer is back: nothing credited

        result = flask(stack, "funding", "reconcile", "--date", datetime.now(LAGOS).date().isoformat())
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 credited, 0 flagged" in result.stdout
        again = flask(stack, "funding", "reconcile", "--date", datetime.now(LAGOS).date().isoformat())
        assert "1 matched, 0 credited, 0 flagged" in again.stdout

        stack.start("web")
        page = s.get(callback, timeout=20)  # the customer finally comes back
        assert "₦4,000.00 added to your wallet" in page.text
        assert balance(s, base) == "₦4,000.00"
        check = flask(stack, "ledger", "check")
        assert check.returncode == 0, check.stdout + check.stderr
