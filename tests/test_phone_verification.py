"""Phone verification by SMS code (issue 24), through the pages and the real
outbox: the code goes out as an SMS to the sandbox's Termii API over a real
socket, and the test reads it from the sandbox's received messages, as a
customer reads their phone.

The code works once; five wrong tries end it (the right code too, after);
an expired, used, foreign or malformed code is refused with a clear message
and changes nothing; a phone verified on one account cannot be verified on a
second (also when the database constraint is what catches it); changing
the phone ends its verification and records ``phone_changed``; the outbox
row keeps no raw code once sent; sending is rate-limited."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa

from billvend.accounts import phone_verification as verification
from billvend.accounts.models import PhoneCode, SecurityEvent, User
from billvend.notifications.models import SENT, Message
from billvend.notifications.tasks import message_sweep_once, wait_until_idle
from billvend.platform.extensions import db
from billvend.platform.models import utcnow
from tests.conftest import CSRF_RE, Auth, base_config, fresh_app
from tests.helpers import make_user

ADA_PHONE = "+2348031234567"
BOLA_PHONE = "+2348059876543"
CODE_RE = re.compile(r"BillVend code: (\d{6})")


@pytest.fixture
def app(database_url, smtp, termii):
    """An app whose outbox sends: SMS to the sandbox, email (sign-in notices) to ``smtp``."""
    requests.post(f"{termii}/sandbox/sms/reset", timeout=5)
    config = base_config(database_url) | {
        "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}", "NOTIFY_CONCURRENCY": 2, "SMTP_DEADLINE_SECONDS": 2.0,
        "SMS_BASE_URL": termii, "SMS_DEADLINE_SECONDS": 2.0, "SMS_READ_TIMEOUT_SECONDS": 1.0}
    with fresh_app(config) as app:
        yield app


def settle() -> None:
    """Let the sender threads finish, then sweep until nothing is left."""
    assert wait_until_idle()
    while message_sweep_once():
        assert wait_until_idle()


def sms_to(termii: str, phone: str) -> list[str]:
    """The texts the sandbox received for ``phone`` (E.164), newest first."""
    rows = requests.get(f"{termii}/sandbox/sms/messages", params={"to": phone[1:]}, timeout=5).json()
    return [row["sms"] for row in rows["messages"]]


def customer_with_phone(email: str, phone: str | None) -> User:
    user = make_user(email)
    user.phone = phone
    db.session.commit()
    return user


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def send_code(client):
    """Press "Send me a code" on /account/phone."""
    page = client.get("/account/phone").get_data(as_text=True)
    token = re.search(r'id="send-csrf_token" name="send-csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, page[:3000]
    return client.post("/account/phone/code", data={"send-csrf_token": token.group(1)})


def post_send(client):
    """POST the send form without its button on the page (a stale tab, a script)."""
    return client.post("/account/phone/code", data={"send-csrf_token": csrf_of(client, "/account")})


def code_sent_to(client, termii: str, phone: str) -> str:
    """Ask for a code and read it from the SMS the sandbox received."""
    response = send_code(client)
    assert response.status_code == 303 and response.headers["Location"].endswith("/account/phone")
    settle()
    [newest, *_] = sms_to(termii, phone)
    return CODE_RE.search(newest).group(1)


def type_code(client, code: str):
    return client.post("/account/phone", data={"code": code, "csrf_token": csrf_of(client, "/account/phone")})


def state_of(user_id: int):
    db.session.rollback()
    return db.session.execute(sa.select(User.phone, User.phone_verified_at, User.verified_phone)
                              .where(User.id == user_id)).one()


def codes_of(user_id: int) -> list[PhoneCode]:
    db.session.rollback()
    return db.session.scalars(sa.select(PhoneCode).where(PhoneCode.user_id == user_id)
                              .order_by(PhoneCode.id)).all()


def page_text(response) -> str:
    return " ".join(response.get_data(as_text=True).split())


@pytest.fixture
def ada(client, auth):
    user = customer_with_phone("ada@example.com", ADA_PHONE)
    assert auth.login().status_code == 303
    return user


def second_customer(app, email: str, phone: str):
    """Another customer, signed in on a browser of their own."""
    user = customer_with_phone(email, phone)
    browser = app.test_client()
    assert Auth(browser).login(email).status_code == 303
    return user, browser


def test_the_code_from_the_sms_verifies_the_phone_once(client, termii, ada):
    page = page_text(client.get("/account"))
    assert "Not verified." in page and 'href="/account/phone"' in page
    code = code_sent_to(client, termii, ADA_PHONE)
    [row] = codes_of(ada.id)
    assert (row.phone, row.attempts, row.used_at) == (ADA_PHONE, 0, None)
    assert code not in row.code_hash and row.code_hash == verification.code_hash(code)
    assert (row.expires_at - row.created_at) == timedelta(minutes=10)
    verified = type_code(client, code)
    assert verified.status_code == 303 and verified.headers["Location"].endswith("/account")
    phone, verified_at, verified_phone = state_of(ada.id)
    assert verified_at is not None and verified_phone == phone == ADA_PHONE
    assert "Verified" in page_text(client.get("/account"))
    assert "is verified since" in page_text(client.get("/account/phone"))
    again = type_code(client, code)
    assert again.status_code == 422 and "That code was already used" in page_text(again)
    assert state_of(ada.id).phone_verified_at == verified_at
    asked = post_send(client)  # already verified: no new code, no SMS
    assert asked.status_code == 303 and len(codes_of(ada.id)) == 1
    settle()
    assert len(sms_to(termii, ADA_PHONE)) == 1


def test_the_outbox_row_keeps_no_raw_code_after_sending(app, client, termii, ada):
    code = code_sent_to(client, termii, ADA_PHONE)
    db.session.rollback()
    [message] = db.session.scalars(sa.select(Message).where(Message.event_key.like(f"user:{ada.id}:phone-code:%")))
    assert (message.channel, message.recipient, message.status, message.secret) == ("sms", ADA_PHONE, SENT, True)
    assert message.context == {"secret_code": "", "minutes": 10}
    assert code not in str(message.context)
    from billvend.web.admin.messages import content_of

    assert content_of(message) == "(hidden)"
    from tests.test_admin import make_admin

    root = make_admin()
    admin_browser = app.test_client()
    admin_auth = Auth(admin_browser)
    assert admin_auth.login("root@example.com").status_code == 303
    admin_auth.second_factor(root)
    listing = page_text(admin_browser.get("/admin/messages"))
    assert f"user:{ada.id}:phone-code:" in listing and "(hidden)" in listing and code not in listing


def test_five_wrong_tries_end_the_code_even_for_the_right_one(client, termii, ada):
    code = code_sent_to(client, termii, ADA_PHONE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = [page_text(type_code(client, wrong)) for _ in range(5)]
    assert "4 tries left" in answers[0] and "1 try left" in answers[3]
    assert "that was the last try" in answers[4]
    refused = type_code(client, code)
    assert refused.status_code == 422 and "typed wrong too many times" in page_text(refused)
    assert state_of(ada.id).phone_verified_at is None
    assert [c.attempts for c in codes_of(ada.id)] == [5]
    # A new code works again.
    assert type_code(client, code_sent_to(client, termii, ADA_PHONE)).status_code == 303
    assert state_of(ada.id).verified_phone == ADA_PHONE


def test_only_the_newest_code_works(client, termii, ada):
    first = code_sent_to(client, termii, ADA_PHONE)
    second = code_sent_to(client, termii, ADA_PHONE)
    if first != second:  # one in a million they are the same
        assert "not right" in page_text(type_code(client, first))
    assert type_code(client, second).status_code == 303


def test_an_expired_code_is_refused_and_changes_nothing(client, termii, ada):
    code = code_sent_to(client, termii, ADA_PHONE)
    [row] = codes_of(ada.id)
    row.expires_at = utcnow() - timedelta(seconds=1)  # ten minutes went by
    db.session.commit()
    refused = type_code(client, code)
    assert refused.status_code == 422 and "That code has expired" in page_text(refused)
    assert state_of(ada.id).phone_verified_at is None
    assert [(c.attempts, c.used_at) for c in codes_of(ada.id)] == [(0, None)]


def test_a_code_of_another_account_does_not_verify_this_one(app, client, termii, ada):
    bola, bola_browser = second_customer(app, "bola@example.com", BOLA_PHONE)
    ada_code = code_sent_to(client, termii, ADA_PHONE)
    bola_code = code_sent_to(bola_browser, termii, BOLA_PHONE)
    while bola_code == ada_code:  # one in a million: ask Bola a new one
        bola_code = code_sent_to(bola_browser, termii, BOLA_PHONE)
    refused = type_code(bola_browser, ada_code)
    assert refused.status_code == 422 and "That code is not right. 4 tries left." in page_text(refused)
    assert state_of(bola.id).phone_verified_at is None
    assert type_code(client, ada_code).status_code == 303  # Ada's own code still works for her


def test_a_second_account_cannot_verify_the_same_phone(app, client, termii, ada):
    bola, bola_browser = second_customer(app, "bola@example.com", ADA_PHONE)
    bola_code = code_sent_to(bola_browser, termii, ADA_PHONE)  # before Ada verifies
    assert type_code(client, code_sent_to(client, termii, ADA_PHONE)).status_code == 303
    refused = type_code(bola_browser, bola_code)
    assert refused.status_code == 422
    assert "already verified on another account" in page_text(refused)
    assert state_of(bola.id).verified_phone is None
    assert [(c.attempts, c.used_at) for c in codes_of(bola.id)] == [(0, None)]
    sent_before = len(sms_to(termii, ADA_PHONE))
    asked = post_send(bola_browser)  # no new code, no SMS for a number another account holds
    assert asked.status_code == 303
    assert "already verified on another account" in page_text(bola_browser.get("/account/phone"))
    settle()
    assert len(codes_of(bola.id)) == 1 and len(sms_to(termii, ADA_PHONE)) == sent_before


def test_the_unique_constraint_settles_two_accounts_verifying_at_once(app, client, termii, ada, monkeypatch):
    bola, bola_browser = second_customer(app, "bola@example.com", ADA_PHONE)
    bola_code = code_sent_to(bola_browser, termii, ADA_PHONE)
    assert type_code(client, code_sent_to(client, termii, ADA_PHONE)).status_code == 303
    # Bola's check ran before Ada's commit: only the constraint can see it.
    monkeypatch.setattr(verification, "verified_elsewhere", lambda user_id, phone: False)
    refused = type_code(bola_browser, bola_code)
    assert refused.status_code == 422 and "already verified on another account" in page_text(refused)
    assert state_of(bola.id).verified_phone is None
    assert [(c.attempts, c.used_at) for c in codes_of(bola.id)] == [(0, None)]  # rolled back whole
    assert state_of(ada.id).verified_phone == ADA_PHONE


def save_profile(client, phone: str):
    return client.post("/account", data={"full_name": "Ada Obi", "phone": phone,
                                         "csrf_token": csrf_of(client, "/account")})


def phone_events(user_id: int) -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(SecurityEvent.kind).where(SecurityEvent.user_id == user_id)))


def test_changing_the_phone_clears_its_verification_and_records_the_change(app, client, termii, ada):
    old_code = code_sent_to(client, termii, ADA_PHONE)
    assert type_code(client, old_code).status_code == 303
    assert save_profile(client, "0803 123 4567").status_code == 303  # the same number: no change
    assert state_of(ada.id).verified_phone == ADA_PHONE and phone_events(ada.id) == []
    assert save_profile(client, "08059876543").status_code == 303
    assert tuple(state_of(ada.id)) == (BOLA_PHONE, None, None)
    assert phone_events(ada.id) == ["phone_changed"]
    assert "Not verified." in page_text(client.get("/account"))
    # The released number can now be verified by another account.
    bola, bola_browser = second_customer(app, "bola@example.com", ADA_PHONE)
    assert type_code(bola_browser, code_sent_to(bola_browser, termii, ADA_PHONE)).status_code == 303
    assert state_of(bola.id).verified_phone == ADA_PHONE


def test_a_code_sent_before_the_phone_changed_does_not_verify_the_new_one(client, termii, ada):
    code = code_sent_to(client, termii, ADA_PHONE)
    assert save_profile(client, "08059876543").status_code == 303
    refused = type_code(client, code)
    assert refused.status_code == 422 and "no longer on your account" in page_text(refused)
    assert state_of(ada.id).phone_verified_at is None


def test_giving_a_first_phone_records_no_change_and_removing_one_does(client, auth):
    user = customer_with_phone("ada@example.com", None)
    assert auth.login().status_code == 303
    page = client.get("/account/phone").get_data(as_text=True)
    assert "has no mobile number yet" in page and "send-csrf_token" not in page  # no send button
    assert post_send(client).status_code == 303 and codes_of(user.id) == []
    assert "Add your mobile number" in page_text(client.get("/account/phone"))
    assert save_profile(client, "08031234567").status_code == 303
    assert state_of(user.id).phone == ADA_PHONE and phone_events(user.id) == []
    assert save_profile(client, "").status_code == 303
    assert state_of(user.id).phone is None and phone_events(user.id) == ["phone_changed"]


@pytest.mark.parametrize("typed", ["12345a", "1234567", "12345", "１２３４５６", "", "9" * 100_000,
                                   "123456\x00", "<script>"])
def test_malformed_codes_are_refused_by_the_form_before_any_try(client, termii, ada, typed):
    code_sent_to(client, termii, ADA_PHONE)
    refused = type_code(client, typed)
    assert refused.status_code in (413, 422), refused.status_code
    if refused.status_code == 422:
        text = page_text(refused)
        assert "6 digits" in text or "Enter the 6-digit code" in text
    assert [c.attempts for c in codes_of(ada.id)] == [0]
    assert state_of(ada.id).phone_verified_at is None


def test_a_code_typed_with_spaces_works(client, termii, ada):
    code = code_sent_to(client, termii, ADA_PHONE)
    assert type_code(client, f" {code[:3]} {code[3:]} ").status_code == 303


def test_a_code_typed_before_any_was_sent_is_refused(client, ada):
    refused = type_code(client, "123456")
    assert refused.status_code == 422 and "Ask for a code first" in page_text(refused)


def test_asking_for_codes_is_rate_limited_per_customer(app, client, termii, ada):
    app.config["RATELIMIT_PHONE_CODE_USER"] = "1 per minute;5 per hour"
    assert send_code(client).status_code == 303
    limited = send_code(client)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    settle()
    assert len(codes_of(ada.id)) == 1 and len(sms_to(termii, ADA_PHONE)) == 1


def test_a_forged_send_form_changes_nothing(client, ada):
    response = client.post("/account/phone/code", data={"send-csrf_token": "forged"})
    assert response.status_code == 400 and codes_of(ada.id) == []


def test_the_pages_need_a_signed_in_customer(client):
    assert "/login" in client.get("/account/phone").headers["Location"]
    assert "/login" in client.post("/account/phone/code").headers["Location"]
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PhoneCode)) == 0


def in_parallel(app, calls) -> list:
    """Run each of ``calls`` at once in a thread with its own app context;
    returns their results (an exception counts as a result)."""
    import threading

    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def worker(i, call):
        with app.app_context():
            try:
                barrier.wait(10)
                results[i] = call()
            except Exception as exc:  # noqa: BLE001 - returned to the test
                results[i] = exc
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def issued_code(user_id: int) -> str:
    from billvend.platform.transactions import run

    return run(verification.issue_code, user_id).code


@pytest.mark.postgresql
def test_parallel_guesses_get_five_tries_between_them(app):
    from billvend.platform.transactions import run

    user_id = customer_with_phone("ada@example.com", ADA_PHONE).id
    code = issued_code(user_id)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    results = in_parallel(app, [lambda: run(verification.check_code, user_id, wrong)] * 16)
    assert all(isinstance(r, verification.CheckResult) for r in results), results
    problems = sorted(r.problem for r in results)
    assert problems == ["exhausted"] * 11 + ["wrong"] * 5, results
    assert [c.attempts for c in codes_of(user_id)] == [5]
    assert not run(verification.check_code, user_id, code).verified


@pytest.mark.postgresql
def test_two_accounts_verifying_one_phone_at_once_end_with_one_owner(app):
    from billvend.platform.transactions import run

    ids = [customer_with_phone(email, ADA_PHONE).id for email in ("ada@example.com", "bola@example.com")]
    codes = {user_id: issued_code(user_id) for user_id in ids}
    results = in_parallel(app, [lambda uid=uid: run(verification.check_code, uid, codes[uid]) for uid in codes])
    verified = [r for r in results if isinstance(r, verification.CheckResult) and r.verified]
    assert len(verified) == 1, results
    db.session.rollback()
    owners = db.session.scalars(sa.select(User.id).where(User.verified_phone == ADA_PHONE)).all()
    assert len(owners) == 1


def test_the_code_sms_is_one_gsm7_part(client, termii, ada):
    from tests.test_sms import GSM7_BASIC

    code_sent_to(client, termii, ADA_PHONE)
    [text] = sms_to(termii, ADA_PHONE)
    assert len(text) <= 160 and set(text) <= GSM7_BASIC, text
    assert "10 minutes" in text


def test_asking_for_codes_is_rate_limited_per_phone_across_accounts(app, termii):
    """Several accounts naming one victim's number must not text it without
    end (SMS bombing, and each text is paid): the per-customer limit alone
    does not stop that."""
    app.config["RATELIMIT_PHONE_CODE_PHONE"] = "3 per hour"
    victim = "+2348051112222"
    answers = []
    for n in range(4):
        _, browser = second_customer(app, f"sender{n}@example.com", victim)
        answers.append(send_code(browser).status_code)
    assert answers == [303, 303, 303, 429]
    settle()
    assert len(sms_to(termii, victim)) == 3
