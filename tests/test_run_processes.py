"""``make run`` as a newcomer runs it: honcho starting the Procfile's
``web``, ``worker`` and ``sandbox`` with the environment the Makefile's
``run`` recipe passes (read from ``make -n run``, not copied here), and the
sandbox process restarted (issue 20, items 6 and 7)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import CSRF_RE, KEY_RE
from tests.stack import BIN, ROOT, Stack, free_port

pytestmark = pytest.mark.once
PASSWORD = "correct horse 1"


def make_run_command(port: int, *make_vars: str) -> str:
    """The shell command ``make run`` starts the processes with (its honcho
    line, as make expands it for ``PORT=port`` and ``make_vars``)."""
    dry = subprocess.run(["make", "-n", "run", f"PORT={port}", *make_vars], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    joined = dry.replace("\\\n", " ")
    [line] = [line for line in joined.splitlines() if "honcho start" in line]
    return line.strip()


def wait_until_up(url: str, seconds: float = 30, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"{url} did not come up:\n{log.read_text() if log and log.exists() else ''}")


def tokens(s: requests.Session, url: str) -> dict:
    html = s.get(url, timeout=10).text
    match = CSRF_RE.search(html)
    data = {"csrf_token": match.group(1) or match.group(2)}
    key = KEY_RE.search(html)
    if key:
        data["idempotency_key"] = key.group(1)
    return data


def balance(s: requests.Session, base: str) -> str:
    return re.search(r'data-testid="balance">([^<]+)<', s.get(base + "/", timeout=10).text).group(1)


def test_make_run_credits_a_bank_transfer_within_seconds(tmp_path):
    """honcho gives each process its own PORT, so the sandbox's default
    webhook target was 127.0.0.1:<its own PORT>, where nothing listens: a
    bank transfer was credited only by the nightly reconciliation. ``make
    run`` now points the sandbox's webhooks at the web process."""
    port, sandbox_port, smtp_port, mail_web_port = free_port(), free_port(), free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = {k: v for k, v in os.environ.items() if k not in {
        "DATABASE_URL", "REDIS_URL", "PAYSTACK_WEBHOOK_URL", "FUNDING_GATEWAY", "PORT", "SMTP_URL"}}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        # A private database, queue, metrics directory and sandbox port, so
        # this run disturbs no other (make run's defaults live in instance/).
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.sqlite3'}",
        "HUEY_SQLITE_PATH": str(tmp_path / "huey.sqlite3"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "SECRET_KEY": secrets.token_hex(32),
        "SANDBOX_URL": sandbox_url,  # VTPASS_BASE_URL and PAYSTACK_BASE_URL follow it
        "WEB_CONCURRENCY": "1", "WORKER_CONCURRENCY": "4",
        "PYTHONUNBUFFERED": "1",
    })
    (tmp_path / "prometheus").mkdir()
    subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    log_path = tmp_path / "honcho.log"
    with open(log_path, "w") as log:
        command = make_run_command(port, f"MAIL_SMTP_PORT={smtp_port}", f"MAIL_WEB_PORT={mail_web_port}")
        honcho = subprocess.Popen(["/bin/bash", "-c", command], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base + "/healthz", proc=honcho, log=log_path)
        wait_until_up(sandbox_url, proc=honcho, log=log_path)
        # maildev (the Procfile's mail) catches what the worker sends to SMTP_URL.
        assert f"SMTP_URL=\"${{SMTP_URL:-smtp://127.0.0.1:{smtp_port}}}\"" in command
        wait_until_up(f"http://127.0.0.1:{mail_web_port}/email", proc=honcho, log=log_path)
        mail = smtplib.SMTP("127.0.0.1", smtp_port, timeout=5)
        assert mail.noop()[0] == 250
        mail.quit()
        s = requests.Session()
        r = s.post(base + "/signup", data=tokens(s, base + "/signup") | {
            "email": "newcomer@example.com", "password": PASSWORD, "confirm_password": PASSWORD}, timeout=10)
        assert r.status_code == 200, r.text
        r = s.post(base + "/wallet/bank-transfer", data=tokens(s, base + "/wallet/fund"), timeout=20)
        number = re.search(r'data-testid="account-number">(\d{10})<', r.text).group(1)
        sent = requests.post(sandbox_url + "/sandbox/bank-transfers",
                             json={"account_number": number, "amount": 650_000}, timeout=10)
        assert sent.status_code == 201, sent.text
        deadline = time.monotonic() + 10
        while balance(s, base) != "₦6,500.00":
            assert time.monotonic() < deadline, (balance(s, base), log_path.read_text()[-4000:])
            time.sleep(0.2)
    finally:
        try:
            os.killpg(honcho.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()


def test_a_restarted_sandbox_process_still_knows_its_accounts_checkouts_and_orders(tmp_path,
                                                                                  sandbox_state_path):
    """``make run`` stopped (SIGTERM) and started again: the customer's
    dedicated account, an open checkout and a VTpass order are all still
    there (they were "not found" before)."""
    sandbox_url = f"http://127.0.0.1:{free_port()}"
    key = "sk_test_billvend_sandbox"
    paystack = {"Authorization": f"Bearer {key}"}
    vtpass = {"api-key": "sandbox-api-key", "secret-key": "sandbox-secret-key"}
    with Stack(tmp_path, {"SANDBOX_URL": sandbox_url,
                          "PAYSTACK_SECRET_KEY": key, "SANDBOX_STATE_PATH": str(sandbox_state_path),
                          "PAYSTACK_SANDBOX_WEBHOOK": "never"}) as stack:
        stack.start("sandbox")
        wait_until_up(sandbox_url, proc=stack.processes["sandbox"], log=tmp_path / "sandbox.log")
        code = requests.post(sandbox_url + "/customer", json={"email": "ada@example.com"}, headers=paystack,
                             timeout=5).json()["data"]["customer_code"]
        number = requests.post(sandbox_url + "/dedicated_account", json={"customer": code}, headers=paystack,
                               timeout=5).json()["data"]["account_number"]
        checkout = requests.post(sandbox_url + "/transaction/initialize", json={
            "email": "ada@example.com", "amount": 400_000, "reference": "FND-process-restart"},
            headers=paystack, timeout=5).json()["data"]
        assert checkout["reference"] == "FND-process-restart"
        pay = requests.post(sandbox_url + "/api/pay", json={
            "request_id": "202612031300restart", "serviceID": "ikeja-electric", "billersCode": "1111111111111",
            "variation_code": "prepaid", "amount": "1500", "phone": "08031234567"}, headers=vtpass,
            timeout=10).json()
        assert pay["code"] == "000", pay

        stack.stop("sandbox")  # SIGTERM, as honcho stops it on Ctrl-C
        stack.start("sandbox")
        wait_until_up(sandbox_url, proc=stack.processes["sandbox"], log=tmp_path / "sandbox.log")

        arrival = requests.post(sandbox_url + "/sandbox/bank-transfers",
                                json={"account_number": number, "amount": 100_000}, timeout=5)
        assert arrival.status_code == 201, arrival.text
        verified = requests.get(sandbox_url + "/transaction/verify/FND-process-restart", headers=paystack,
                                timeout=5)
        assert verified.status_code == 200 and verified.json()["data"]["status"] == "ongoing"
        assert requests.get(checkout["authorization_url"], timeout=5).status_code == 200
        requery = requests.post(sandbox_url + "/api/requery", json={"request_id": "202612031300restart"},
                                headers=vtpass, timeout=5).json()
        assert requery["code"] == "000" and requery["content"]["transactions"]["status"] == "delivered"
