"""Issue 23: "Send token again" (billvend.vending.resend, POST
/payments/<reference>/resend) and its limits, counted from the outbox rows;
the customer's token channels (SMS, email or both, on /account); the
dashboard's prompt for a phone set aside by 0015_phones.

These tests look at the outbox rows (NOTIFY_CONCURRENCY is 0: nothing is
sent); tests/test_token_delivery.py delivers them over real sockets."""

from __future__ import annotations

import threading
from datetime import datetime, time, timedelta

import pytest
import sqlalchemy as sa

from billvend.accounts.models import User
from billvend.notifications.models import Message
from billvend.platform.extensions import db
from billvend.platform.transactions import run
from billvend.vending.lifecycle import LAGOS
from billvend.vending.models import Payment
from billvend.vending.resend import resend_token
from tests.conftest import CSRF_RE
from tests.helpers import make_payment, make_user


def rows(like: str = "payment:%") -> list[tuple[str, str, str, str]]:
    """(event_key, channel, recipient, template) of the outbox rows whose key matches ``like``."""
    db.session.rollback()
    return [tuple(r) for r in db.session.execute(
        sa.select(Message.event_key, Message.channel, Message.recipient, Message.template)
        .where(Message.event_key.like(like)).order_by(Message.id))]


def paid(pay, **fields) -> Payment:
    """Pay (the simulator delivers at once); the payment as it is now."""
    response = pay(**fields)
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    reference = response.headers["Location"].rsplit("/", 1)[-1]
    db.session.rollback()
    return db.session.scalar(sa.select(Payment).where(Payment.reference == reference))


def csrf(client, path: str = "/") -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    return match.group(1) or match.group(2)


def resend(client, payment: Payment, to: str, **extra):
    data = {"to": to, "csrf_token": csrf(client, f"/payments/{payment.reference}")} | extra
    return client.post(f"/payments/{payment.reference}/resend", data=data)


def flashes(client) -> str:
    return client.get("/history").get_data(as_text=True)


def test_a_successful_payment_offers_send_again_and_a_post_queues_resend_1_by_email(client, customer, pay):
    payment = paid(pay)
    page = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert 'data-testid="resend"' in page and "By email to ada@example.com" in page
    assert "By SMS to 08031234567" in page  # the phone on the payment
    assert 'data-testid="resend"' in client.get("/history").get_data(as_text=True)  # its history row
    before = rows()
    response = resend(client, payment, "email")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/payments/{payment.reference}"
    assert rows() == before + [(f"payment:{payment.id}:resend:1", "email", "ada@example.com", "token")]
    assert "Your token is on its way by email to ada@example.com." in flashes(client)
    [row] = db.session.scalars(sa.select(Message).where(Message.event_key.like("%:resend:%"))).all()
    assert row.secret and row.context["token_groups"] == payment.token_groups and row.user_id == customer.id


def test_send_again_to_the_accounts_phone_or_the_payments_phone_numbers_each_resend(client, customer, pay):
    run(lambda: db.session.execute(sa.update(User).values(phone="+2348051234567")))
    payment = paid(pay, phone="0803 123 4567")
    assert resend(client, payment, "payment_phone", next="/history?page=1").headers["Location"] == "/history?page=1"
    assert resend(client, payment, "account_phone").status_code == 303
    assert rows("%:resend:%") == [
        (f"payment:{payment.id}:resend:1", "sms", "+2348031234567", "token"),
        (f"payment:{payment.id}:resend:2", "sms", "+2348051234567", "token")]


def test_a_resend_by_sms_of_a_token_with_key_change_codes_sends_the_codes_first(client, customer, pay):
    payment = paid(pay, meter_number="1212121212121", amount="2000")
    assert payment.kct1
    assert resend(client, payment, "payment_phone").status_code == 303
    key = f"payment:{payment.id}:resend:1"
    assert rows("%:resend:%") == [(f"{key}:kct", "sms", "+2348031234567", "token_kct"),
                                  (key, "sms", "+2348031234567", "token")]


def test_the_fourth_resend_in_an_hour_is_refused_with_when_and_changes_nothing(client, customer, pay):
    payment = paid(pay)
    for _ in range(3):
        assert resend(client, payment, "email").status_code == 303
    before = rows()
    assert resend(client, payment, "payment_phone").status_code == 303
    page = flashes(client)
    assert "This token was sent again 3 times in the last hour." in page
    assert "You can send it again at " in page and "(in 60 minutes)" in page
    assert rows() == before
    # The refusal names the moment the first of the three leaves the hour.
    first = db.session.scalar(sa.select(sa.func.min(Message.created_at)).where(Message.event_key.like("%:resend:%")))
    result = run(resend_token, payment.id, customer.id, "email")
    assert (result.sent, result.retry_at) == (False, first + timedelta(hours=1))
    due = first + timedelta(hours=1)
    shown = due.replace(second=0, microsecond=0) + (timedelta(minutes=1) if due.second or due.microsecond
                                                    else timedelta(0))  # rounded up: never too early
    shown = shown.astimezone(LAGOS)
    assert f"again at {shown:%H:%M} (in " in result.message
    # An hour later that first one no longer counts: the next is resend 4.
    run(lambda: db.session.execute(sa.update(Message).where(Message.created_at == first)
                                   .values(created_at=first - timedelta(minutes=61))))
    assert run(resend_token, payment.id, customer.id, "email").sent
    assert rows("%:resend:4") == [(f"payment:{payment.id}:resend:4", "email", "ada@example.com", "token")]


def test_the_daily_cap_counts_every_payment_of_the_customer_and_says_midnight(app, client, customer, pay):
    app.config["TOKEN_RESEND_DAILY_LIMIT"] = 4
    first, second = paid(pay), paid(pay, meter_number="1111111111112")
    for payment in (first, first, first, second):
        assert resend(client, payment, "email").status_code == 303
    before = rows()
    assert resend(client, second, "email").status_code == 303
    page = flashes(client)
    assert "You have sent tokens again 4 times today, the most in one day." in page
    assert "You can send this token again at 00:00 (in " in page
    assert rows() == before
    result = run(resend_token, second.id, customer.id, "email")
    now_lagos = datetime.now(LAGOS)
    tomorrow = datetime.combine(now_lagos.date() + timedelta(days=1), time(0), tzinfo=LAGOS)
    assert not result.sent and abs(result.retry_at - tomorrow) < timedelta(minutes=5)
    # The cap is Ada's alone: Bob's first resend of the day goes.
    bob = make_user("bob@example.com", balance_kobo=100_000)
    bobs = make_payment(bob)
    run(lambda: db.session.execute(sa.update(Payment).where(Payment.id == bobs.id)
                                   .values(status="successful", token="1234" * 5)))
    assert run(resend_token, bobs.id, bob.id, "email").sent
    assert not run(resend_token, second.id, customer.id, "email").sent


def test_another_customers_payment_is_a_404_and_changes_nothing(client, customer, pay, auth):
    payment = paid(pay)
    auth.logout()
    make_user("bob@example.com", balance_kobo=100_000)
    auth.login("bob@example.com")
    before = rows()
    assert resend(client, payment, "email").status_code == 404
    assert client.post("/payments/not-a-reference/resend", data={"to": "email"}).status_code in (400, 404)
    assert rows() == before
    assert 'data-testid="resend"' not in client.get("/history").get_data(as_text=True)


def refunded_payment(user) -> Payment:
    """A payment of ``user`` the disco refused, refunded (its refund messages queued)."""
    from billvend.vending import lifecycle
    from billvend.vending.models import FAILED, PENDING, VENDING

    payment = make_payment(user, amount_kobo=100_000)
    run(lifecycle.transition, payment.id, PENDING, VENDING)
    run(lifecycle.transition, payment.id, VENDING, FAILED, code="SERVICE_UNAVAILABLE")
    assert run(lifecycle.stage_reversal, payment.id)
    return db.session.get(Payment, payment.id, populate_existing=True)


@pytest.mark.parametrize("kind", ["refunded", "pending", "postpaid"])
def test_a_payment_not_delivered_or_without_a_token_is_refused_clearly(client, customer, pay, kind):
    if kind == "refunded":
        payment = refunded_payment(customer)
    elif kind == "pending":
        payment = make_payment(customer)
    else:
        payment = paid(pay, meter_number="1010101010101", meter_type="postpaid")
    assert payment.status == {"refunded": "reversed", "pending": "pending", "postpaid": "successful"}[kind]
    assert not payment.token
    assert 'data-testid="resend"' not in client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    before = rows()
    assert resend(client, payment, "email").status_code == 303
    assert "Only a successful payment with a token can be sent again." in flashes(client)
    assert rows() == before


def test_bad_input_is_refused_without_a_row(client, customer, pay):
    payment = paid(pay)
    before = rows()
    assert resend(client, payment, "fax").status_code == 303
    assert "Choose where to send the token." in flashes(client)
    assert resend(client, payment, "account_phone").status_code == 303  # Ada's account has no phone
    assert "There is no phone number to send it to." in flashes(client)
    assert client.post(f"/payments/{payment.reference}/resend", data={"to": "email"}).status_code == 400  # no CSRF
    assert rows() == before


def test_htmx_gets_the_outcome_as_a_fragment(client, customer, pay):
    payment = paid(pay)
    response = client.post(
        f"/payments/{payment.reference}/resend", headers={"HX-Request": "true"},
        data={"to": "email", "csrf_token": csrf(client, f"/payments/{payment.reference}")})
    assert response.status_code == 200
    assert 'data-testid="resend-result"' in response.get_data(as_text=True)
    assert "on its way by email" in response.get_data(as_text=True)
    assert len(rows("%:resend:%")) == 1


def test_concurrent_resends_never_pass_the_hourly_cap(app, client, customer, pay):
    """Eight requests at once (a flood, a double-click) for one payment: the
    first write takes the customer's row lock, so each counts the others'
    rows and exactly three are queued."""
    payment = paid(pay)
    barrier, results = threading.Barrier(8), []

    def one(target: str) -> None:
        with app.app_context():
            barrier.wait(timeout=10)
            results.append(run(resend_token, payment.id, customer.id, target).sent)
            db.session.remove()

    threads = [threading.Thread(target=one, args=(("email", "payment_phone")[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False] * 5 + [True] * 3
    keys = [key for key, *_ in rows("%:resend:%")]
    assert sorted(keys) == [f"payment:{payment.id}:resend:{n}" for n in (1, 2, 3)]


# --- Token channels: the customer's choice on /account ------------------------------------


def choose(client, choice: str):
    return client.post("/account/token-channels", data={
        "channels-token_channels": choice, "channels-csrf_token": csrf(client, "/account")})


@pytest.mark.parametrize("choice,channels", [("both", ["email", "sms"]), ("sms", ["sms"]), ("email", ["email"])])
def test_the_token_and_the_refund_go_only_where_the_customer_chose(client, customer, pay, choice, channels):
    assert choose(client, choice).status_code == 303
    assert db.session.get(User, customer.id, populate_existing=True).token_channels == choice
    delivered, refunded = paid(pay), refunded_payment(customer)
    assert sorted(ch for _, ch, _, _ in rows(f"payment:{delivered.id}:token")) == channels
    assert sorted(ch for _, ch, _, _ in rows(f"payment:{refunded.id}:refund")) == channels


def test_the_profile_shows_the_choice_and_refuses_an_unknown_one(client, customer):
    page = client.get("/account").get_data(as_text=True)
    assert 'data-testid="token-channels"' in page
    assert '<input checked id="channels-token_channels-0" name="channels-token_channels" required type="radio" ' \
           'value="both">' in page
    assert choose(client, "pigeon").status_code == 422
    assert choose(client, "").status_code == 422
    assert db.session.get(User, customer.id, populate_existing=True).token_channels == "both"
    assert choose(client, "email").status_code == 303
    assert '<input checked id="channels-token_channels-2"' in client.get("/account").get_data(as_text=True)


def test_sms_only_without_a_mobile_on_the_payment_still_emails_the_token(app, client, customer, pay):
    """A token is never sent nowhere: with SMS chosen and no mobile on the
    payment (one stored before 0015_phones), the email goes."""
    from billvend.vending import messages

    assert choose(client, "sms").status_code == 303
    payment = paid(pay)
    run(lambda: db.session.execute(sa.update(Payment).values(phone="01 234 5678")))
    run(lambda: db.session.execute(sa.delete(Message)))
    run(messages.token_delivered, payment.id)
    assert rows() == [(f"payment:{payment.id}:token", "email", "ada@example.com", "token")]


def test_security_mail_is_sent_whatever_the_token_choice(client, customer, auth):
    assert choose(client, "sms").status_code == 303
    auth.logout()
    auth.signup("ada@example.com", "another password 9")  # someone signs up with Ada's address
    assert "signup_attempt" in [t for *_, t in rows(f"user:{customer.id}:%")]


# --- The dashboard's prompt for a phone set aside by 0015_phones ---------------------------


def test_the_dashboard_asks_for_a_phone_set_aside_and_stops_once_it_is_fixed(client, customer):
    run(lambda: db.session.execute(sa.update(User).values(phone=None, phone_to_fix="0123 45")))
    page = client.get("/").get_data(as_text=True)
    assert 'data-testid="phone-to-fix"' in page and "0123 45" in page
    client.post("/profile-prompt", data={"later": "Not now", "csrf_token": csrf(client)})
    assert 'data-testid="phone-to-fix"' in client.get("/").get_data(as_text=True)  # still nothing can reach it
    response = client.post("/profile-prompt", data={"phone": "+1 202 555 0100", "csrf_token": csrf(client)})
    assert response.status_code == 422  # a foreign number is refused, nothing changes
    assert db.session.get(User, customer.id, populate_existing=True).phone_to_fix == "0123 45"
    response = client.post("/profile-prompt", data={"phone": "0803 123 4567", "submit": "Save",
                                                    "csrf_token": csrf(client)})
    assert response.status_code == 303
    user = db.session.get(User, customer.id, populate_existing=True)
    assert (user.phone, user.phone_to_fix) == ("+2348031234567", None)
    page = client.get("/").get_data(as_text=True)
    assert 'data-testid="phone-to-fix"' not in page and 'action="/profile-prompt"' not in page
