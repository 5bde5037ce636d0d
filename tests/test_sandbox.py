"""The sandbox server keeps its state (dedicated accounts, checkouts, VTpass
orders) in a file, so a restart of ``make run`` finds it again (issue 20,
item 7). Served by werkzeug's test client here; tests/test_run_processes.py
restarts the real process."""

from __future__ import annotations

import json

import pytest

from billvend.sandbox import create_app

SECRET = "sk_test_sandbox_suite"
PAYSTACK = {"Authorization": f"Bearer {SECRET}"}
VTPASS = {"api-key": "sandbox-api-key", "secret-key": "sandbox-secret-key"}


def sandbox(path) -> object:
    return create_app({"PAYSTACK_SECRET_KEY": SECRET, "PAYSTACK_SANDBOX_WEBHOOK": "never",
                       "VTPASS_API_KEY": "sandbox-api-key", "VTPASS_SECRET_KEY": "sandbox-secret-key",
                       "SANDBOX_STATE_PATH": str(path)})


def fill(client) -> dict:
    """A customer with a dedicated account, an open checkout and a delivered
    VTpass order; what to look for after the restart."""
    customer = client.post("/customer", json={"email": "ada@example.com", "first_name": "Ada",
                                              "last_name": "Obi"}, headers=PAYSTACK).get_json()["data"]
    account = client.post("/dedicated_account", json={"customer": customer["customer_code"]},
                          headers=PAYSTACK).get_json()["data"]
    checkout = client.post("/transaction/initialize", json={
        "email": "ada@example.com", "amount": 500_000, "reference": "FND-restart-1",
        "callback_url": "http://billvend.invalid/cb"}, headers=PAYSTACK).get_json()["data"]
    paid = client.post("/api/pay", json={
        "request_id": "202612031200restart", "serviceID": "ikeja-electric", "billersCode": "1111111111111",
        "variation_code": "prepaid", "amount": "2000", "phone": "08031234567"}, headers=VTPASS).get_json()
    assert paid["code"] == "000", paid
    return {"code": customer["customer_code"], "number": account["account_number"],
            "checkout": checkout["authorization_url"].rsplit("/", 1)[1]}


def test_a_restarted_sandbox_keeps_accounts_checkouts_and_orders(tmp_path):
    path = tmp_path / "sandbox-state.json"
    first = sandbox(path)
    made = fill(first.test_client())
    first.extensions["sandbox_state_file"].flush()
    assert path.exists() and "FND-restart-1" in path.read_text()

    again = sandbox(path).test_client()  # the restart: a new process reading the same file
    # The customer's dedicated account still exists (a transfer into it arrives) ...
    arrival = again.post("/sandbox/bank-transfers", json={"account_number": made["number"], "amount": 300_000})
    assert arrival.status_code == 201, arrival.get_data(as_text=True)
    assert arrival.get_json()["data"]["customer"]["customer_code"] == made["code"]
    # ... and is the one opened again for the same customer.
    reopened = again.post("/dedicated_account", json={"customer": made["code"]}, headers=PAYSTACK)
    assert reopened.get_json()["data"]["account_number"] == made["number"]
    # The open checkout is still open, not "not found", and can still be paid.
    verified = again.get("/transaction/verify/FND-restart-1", headers=PAYSTACK)
    assert verified.status_code == 200 and verified.get_json()["data"]["status"] == "ongoing"
    assert again.get(f"/checkout/{made['checkout']}").status_code == 200
    assert again.post(f"/checkout/{made['checkout']}", data={"outcome": "success"}).status_code == 302
    assert again.get("/transaction/verify/FND-restart-1",
                     headers=PAYSTACK).get_json()["data"]["status"] == "success"
    # The VTpass order is still delivered on requery, and a second pay is a duplicate.
    requery = again.post("/api/requery", json={"request_id": "202612031200restart"}, headers=VTPASS).get_json()
    assert requery["code"] == "000" and requery["content"]["transactions"]["status"] == "delivered"
    duplicate = again.post("/api/pay", json={
        "request_id": "202612031200restart", "serviceID": "ikeja-electric", "billersCode": "1111111111111",
        "variation_code": "prepaid", "amount": "2000", "phone": "08031234567"}, headers=VTPASS).get_json()
    assert duplicate["code"] == "014"


def test_the_state_file_is_written_without_an_explicit_flush(tmp_path):
    """Changes reach the file on their own within a moment (a restart by
    Ctrl-C or a crash loses at most that moment)."""
    import time

    path = tmp_path / "state.json"
    fill(sandbox(path).test_client())
    deadline = time.monotonic() + 5
    while not (path.exists() and "FND-restart-1" in path.read_text()):
        assert time.monotonic() < deadline, "state file not written"
        time.sleep(0.05)
    assert json.loads(path.read_text())["paystack"]["accounts"]


def test_a_damaged_state_file_starts_an_empty_sandbox(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    client = sandbox(path).test_client()
    assert client.get("/transaction/verify/FND-restart-1", headers=PAYSTACK).status_code == 404


def test_sandbox_url_is_where_both_providers_default_and_vtpass_can_point_elsewhere():
    from billvend.platform.config import from_env

    defaults = from_env({})
    assert defaults["SANDBOX_URL"] == "http://127.0.0.1:5055"
    assert defaults["VTPASS_BASE_URL"] == defaults["PAYSTACK_BASE_URL"] == "http://127.0.0.1:5055"
    moved = from_env({"SANDBOX_URL": "http://127.0.0.1:6066/"})
    assert moved["VTPASS_BASE_URL"] == "http://127.0.0.1:6066/"  # as given, as VTPASS_BASE_URL is
    assert moved["PAYSTACK_BASE_URL"] == "http://127.0.0.1:6066"  # trailing slash dropped, as before
    real_vtpass = from_env({"VTPASS_BASE_URL": "https://sandbox.vtpass.com"})
    assert real_vtpass["VTPASS_BASE_URL"] == "https://sandbox.vtpass.com"
    assert real_vtpass["PAYSTACK_BASE_URL"] == real_vtpass["SANDBOX_URL"] == "http://127.0.0.1:5055"


def test_the_sandbox_process_listens_at_sandbox_url_wherever_vtpass_base_url_points(tmp_path):
    """Pointing VTpass at the real one (or anywhere) leaves the Paystack
    sandbox where SANDBOX_URL says (issue 22)."""
    import os
    import subprocess
    import sys
    import time

    import requests

    from tests.stack import ROOT, free_port

    sandbox_port, elsewhere_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VTPASS", "PAYSTACK", "SANDBOX"))}
    env.update({"SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}", "SANDBOX_STATE_PATH": "none",
                "VTPASS_BASE_URL": f"http://127.0.0.1:{elsewhere_port}", "PYTHONUNBUFFERED": "1"})
    log = tmp_path / "sandbox.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "billvend.sandbox"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, answer = time.monotonic() + 30, None
        while answer is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = requests.post(f"http://127.0.0.1:{sandbox_port}/customer",
                                       json={"email": "ada@example.com"}, timeout=2,
                                       headers={"Authorization": "Bearer sk_test_billvend_sandbox"})
            except requests.ConnectionError:
                time.sleep(0.2)
        assert answer is not None, log.read_text()
        assert answer.status_code == 200, answer.text
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{elsewhere_port}/", timeout=2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_restarted_sandbox_keeps_every_sms_newest_first(tmp_path):
    path = tmp_path / "sandbox-state.json"
    first = sandbox(path).test_client()
    for text in ("Token 1111", "Token 2222"):
        sent = first.post("/api/sms/send", json={"api_key": "sandbox-termii-key", "to": "2348031234567",
                                                  "from": "BillVend", "sms": text, "type": "plain",
                                                  "channel": "dnd"})
        assert sent.status_code == 200 and sent.get_json()["message"] == "Successfully Sent"
    first.application.extensions["sandbox_state_file"].flush()

    again = sandbox(path).test_client()
    listed = again.get("/sandbox/sms/messages").get_json()["messages"]
    assert [(m["sms"], m["to"], m["from"], m["channel"]) for m in listed] == [
        ("Token 2222", "2348031234567", "BillVend", "dnd"), ("Token 1111", "2348031234567", "BillVend", "dnd")]
    assert again.get("/sandbox/sms/messages?to=2348099999999").get_json()["messages"] == []


def test_the_sms_balance_is_exact_whole_naira_across_a_restart(tmp_path):
    """Termii answers each send with the account's balance; the sandbox keeps
    it in integer kobo (₦4 a page), never a float that drifts."""
    path = tmp_path / "sandbox-state.json"
    first = sandbox(path).test_client()
    body = {"api_key": "sandbox-termii-key", "to": ["2348031234567", "2348059876543"], "from": "BillVend",
            "sms": "Token 1111", "type": "plain", "channel": "dnd"}
    assert first.post("/api/sms/send", json=body).get_json()["balance"] == 10_000 - 8
    first.application.extensions["sandbox_state_file"].flush()

    answer = sandbox(path).test_client().post("/api/sms/send", json=body).get_json()
    assert answer["balance"] == 10_000 - 16 and isinstance(answer["balance"], int)


@pytest.mark.parametrize("change,status,words", [
    ({"api_key": "wrong"}, 401, "Invalid API key"),
    ({"from": "B"}, 400, "Invalid Sender Id"),
    ({"to": "08031234567"}, 422, "Invalid phone number"),
    ({"to": ["2348031234567"] * 101}, 422, "Invalid phone number"),
    ({"sms": ""}, 422, "sms must be"),
    ({"channel": "sms"}, 422, "channel must be"),
])
def test_the_sandbox_refuses_what_termii_refuses_and_keeps_nothing(tmp_path, change, status, words):
    client = sandbox(tmp_path / "state.json").test_client()
    body = {"api_key": "sandbox-termii-key", "to": "2348031234567", "from": "BillVend", "sms": "Hi",
            "type": "plain", "channel": "dnd"} | change
    answer = client.post("/api/sms/send", json=body)
    assert answer.status_code == status and words in answer.get_json()["message"]
    assert client.get("/sandbox/sms/messages").get_json()["messages"] == []
