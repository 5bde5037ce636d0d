"""End to end over HTTP against the real processes of the Procfile.

``honcho`` starts the Procfile's ``web`` (gunicorn) and ``worker``
(``huey_consumer`` on SqliteHuey) on a free port, after ``flask db upgrade``
built the database from the migrations; the test then signs up, funds, pays
and polls the status partial until the token appears.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
KEY_RE = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stack(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'e2e.sqlite3'}",
        "HUEY_SQLITE_PATH": str(tmp_path / "huey.sqlite3"),
        "SIMULATOR_DELAY_SECONDS": "0",
        "SIMULATOR_SUCCESS_RATE": "1",
        "SECRET_KEY": "e2e",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "HTMX_URL": "/static/vendor/htmx.min.js",
        "PYTHONUNBUFFERED": "1",
    })
    subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=60)
    log = open(tmp_path / "honcho.log", "w+")
    proc = subprocess.Popen([str(BIN / "honcho"), "start", "web", "worker"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                log.seek(0)
                pytest.fail("the stack did not start:\n" + log.read())
            time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


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
        "amount": "2500", "phone": "08031234567"}, allow_redirects=False)
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
