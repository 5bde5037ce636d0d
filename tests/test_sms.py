"""SMS in Termii's shape (issue 23, billvend.notifications.sms) against the
sandbox's Termii API over a real socket: what is sent, on which channel, and
which refusals are permanent."""

from __future__ import annotations

import time

import pytest
import requests

from billvend.notifications import channels
from billvend.notifications.channels import SendError
from billvend.notifications.sms import send_sms
from billvend.platform.transactions import ExternalCallInTransaction, run


@pytest.fixture
def sms_app(app, termii):
    requests.post(f"{termii}/sandbox/sms/reset", timeout=5)
    app.config.update(SMS_BASE_URL=termii, SMS_DEADLINE_SECONDS=2.0, SMS_READ_TIMEOUT_SECONDS=1.0)
    yield app
    requests.post(f"{termii}/sandbox/sms/reset", timeout=5)


def received(url: str) -> list[dict]:
    return requests.get(f"{url}/sandbox/sms/messages", timeout=5).json()["messages"]


def test_an_sms_reaches_termii_as_234_digits_on_the_dnd_route(sms_app, termii):
    first = send_sms("+2348031234567", "Token 1234 5678")
    second = send_sms("+2348031234567", "Second")
    assert first and second and first != second
    newest, oldest = received(termii)
    assert (newest["sms"], oldest["sms"]) == ("Second", "Token 1234 5678")
    assert {k: oldest[k] for k in ("to", "from", "channel", "message_id")} == {
        "to": "2348031234567", "from": "BillVend", "channel": "dnd", "message_id": first}
    assert oldest["time"]


def test_the_sms_sender_is_registered_for_the_outbox(sms_app):
    from billvend.notifications import sms

    assert channels.sender_for("sms") is sms.send


@pytest.mark.parametrize("phone", ["08031234567", "+447911123456", ""])
def test_a_phone_not_in_e164_is_refused_for_good_before_any_call(sms_app, termii, phone):
    with pytest.raises(SendError) as refused:
        send_sms(phone, "Token")
    assert refused.value.permanent
    assert received(termii) == []


def test_a_refused_sender_id_is_permanent_a_5xx_or_bad_key_is_retried(sms_app, termii):
    sms_app.config["SMS_SENDER_ID"] = "Bill Vend!"
    with pytest.raises(SendError, match="Invalid Sender Id") as refused:
        send_sms("+2348031234567", "Token")
    assert refused.value.permanent
    sms_app.config["SMS_SENDER_ID"] = "BillVend"
    sms_app.config["SMS_API_KEY"] = "wrong"
    with pytest.raises(SendError, match="401") as wrong_key:
        send_sms("+2348031234567", "Token")
    assert not wrong_key.value.permanent
    sms_app.config["SMS_API_KEY"] = "sandbox-termii-key"
    requests.post(f"{termii}/sandbox/sms/settings", json={"fail_status": 503}, timeout=5)
    with pytest.raises(SendError, match="503") as down:
        send_sms("+2348031234567", "Token")
    assert not down.value.permanent
    assert received(termii) == []


def test_a_gateway_that_never_answers_is_given_up_at_the_deadline(sms_app, termii):
    sms_app.config.update(SMS_DEADLINE_SECONDS=0.3, SMS_READ_TIMEOUT_SECONDS=5.0)
    requests.post(f"{termii}/sandbox/sms/settings", json={"delay_seconds": 1}, timeout=5)
    started = time.monotonic()
    with pytest.raises(SendError, match="no answer within") as late:
        send_sms("+2348031234567", "Token")
    assert time.monotonic() - started < 0.9 and not late.value.permanent and late.value.channel_down
    # Termii has no idempotency key: the send given up on may still go out.
    while not received(termii) and time.monotonic() - started < 3:
        time.sleep(0.1)
    assert len(received(termii)) == 1


def test_no_sms_is_sent_inside_a_unit_of_work(sms_app, termii):
    with pytest.raises(ExternalCallInTransaction):
        run(send_sms, "+2348031234567", "Token")
    assert received(termii) == []


# -- the token SMS (billvend/vending/messages.py, templates/messages/token*.sms.txt) --

GSM7_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")


def deliver_outbox() -> None:
    """Send every pending SMS now, as the outbox's sender threads would
    (email is tests/test_notifications.py's)."""
    from billvend.notifications.models import PENDING, Message
    from billvend.notifications.tasks import send_message
    from billvend.platform.extensions import db

    ids = db.session.scalars(db.select(Message.id).where(Message.status == PENDING, Message.channel == "sms")
                                 .order_by(Message.id)).all()
    db.session.rollback()
    for message_id in ids:
        assert send_message(message_id) == "sent"


def test_a_successful_payment_sends_its_token_in_one_gsm7_sms(sms_app, termii, client, customer, pay):
    from billvend.vending.models import Payment
    from billvend.platform.extensions import db
    import sqlalchemy as sa

    assert pay(amount="1500", phone="0803 123 4567").status_code in (302, 303)
    deliver_outbox()
    payment = db.session.scalar(sa.select(Payment))
    assert payment.status == "successful" and payment.token
    [sms] = received(termii)
    assert sms["to"] == "2348031234567" and sms["channel"] == "dnd"
    text = sms["sms"]
    assert set(text) <= GSM7_BASIC and len(text) <= 160, text
    groups = " ".join(payment.token[i:i + 4] for i in range(0, 20, 4))
    for part in (groups, "NGN 1,500.00", payment.meter_number, payment.reference, "Ikeja"):
        assert part in text, (part, text)
    assert "₦" not in text


def test_key_change_tokens_come_first_in_a_second_sms(sms_app, termii, client, customer, pay):
    from billvend.vending.models import Payment
    from billvend.platform.extensions import db
    import sqlalchemy as sa

    assert pay(meter_number="1212121212121", amount="2000").status_code in (302, 303)
    deliver_outbox()
    payment = db.session.scalar(sa.select(Payment))
    assert payment.kct1 and payment.kct2
    token_sms, kct_sms = received(termii)  # newest first: the KCTs went out first
    assert kct_sms["sms"].startswith("Enter these two codes first: ")
    assert " ".join(payment.kct1[i:i + 4] for i in range(0, 20, 4)) in kct_sms["sms"]
    assert payment.token[:4] in token_sms["sms"]
    assert all(len(m["sms"]) <= 160 and set(m["sms"]) <= GSM7_BASIC for m in (token_sms, kct_sms))


def test_the_longest_disco_name_and_largest_amount_still_fit_one_sms(sms_app):
    from billvend.notifications.models import Message
    from billvend.notifications.services import render
    from billvend.vending.messages import sms_amount, spaced_groups
    from billvend.vending.providers import DISCOS

    longest = max(DISCOS.values(), key=len)
    largest = sms_app.config["MAX_PAYMENT_KOBO"]
    context = {"disco": longest, "token_spaced": spaced_groups("9" * 20), "units_kwh": "99999.99",
               "amount_sms": sms_amount(largest), "meter_number": "9" * 13,
               "reference": "202612312359" + "f" * 14, "kct1_spaced": spaced_groups("8" * 20),
               "kct2_spaced": spaced_groups("7" * 20)}
    for template in ("token", "token_kct"):
        text = render(Message(template=template, context=context)).sms
        assert len(text) <= 160 and set(text) <= GSM7_BASIC, (len(text), text)
    assert sms_amount(largest) == "NGN 500,000.00"
    assert longest in render(Message(template="token", context=context)).sms


def test_a_refund_is_explained_in_customer_words_by_sms_and_email(sms_app, termii):
    from billvend.notifications.models import Message
    from billvend.platform.extensions import db
    from billvend.vending import lifecycle
    from billvend.vending.models import FAILED, PENDING, REVERSED, VENDING
    from tests.helpers import make_payment, make_user

    user = make_user("ada@example.com", balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=250_000)
    run(lifecycle.transition, payment.id, PENDING, VENDING)
    run(lifecycle.transition, payment.id, VENDING, FAILED, code="SERVICE_UNAVAILABLE")
    assert run(lifecycle.stage_reversal, payment.id)
    assert db.session.get(type(payment), payment.id).status == REVERSED
    rows = db.session.scalars(db.select(Message).where(Message.event_key.like("payment:%"))
                              .order_by(Message.channel)).all()
    assert [(m.event_key, m.channel, m.recipient, m.secret) for m in rows] == [
        (f"payment:{payment.id}:refund", "email", "ada@example.com", False),
        (f"payment:{payment.id}:refund", "sms", "+2348031234567", False)]
    assert rows[0].context["reason"] == "The disco's vending service was unavailable."
    deliver_outbox()
    [sms] = received(termii)
    assert "NGN 2,500.00" in sms["sms"] and "vending service was unavailable" in sms["sms"]
    assert payment.reference in sms["sms"] and len(sms["sms"]) <= 160 and set(sms["sms"]) <= GSM7_BASIC
