"""Transfers between customers (issue 27): ``/wallet/transfer``, its review
step, the receipt, both histories and messages, every refusal (nothing moves),
step-up, the distinct-recipient lookup limit, and the Lagos-day daily limit."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from billvend.accounts import sessions
from billvend.accounts.models import User
from billvend.ledger import limits
from billvend.ledger import services as ledger
from billvend.ledger.invariants import check_invariants
from billvend.ledger.models import KIND_P2P, Transfer
from billvend.notifications.models import Message
from billvend.platform import clock
from billvend.platform.extensions import db
from billvend.platform.models import utcnow
from billvend.transfers import services as transfers
from billvend.transfers.models import P2PTransfer, masked_name
from tests.conftest import CSRF_RE, KEY_RE
from tests.helpers import assert_books_balance, make_user, wallet_balance
from tests.test_step_up import add_event, age_password_entry

PASSWORD = "correct horse 1"


def verified(user: User, name: str, phone: str | None = None) -> User:
    user.full_name = name
    user.email_verified_at = utcnow()
    if phone:
        user.phone = user.verified_phone = phone
        user.phone_verified_at = utcnow()
    db.session.commit()
    return user


@pytest.fixture
def ada(client, auth):
    user = verified(make_user("ada@example.com", balance_kobo=1_000_000_00), "Ada Obi", "+2348031234567")
    assert auth.login().status_code == 303
    return user


@pytest.fixture
def bola():
    return verified(make_user("bola@example.com"), "Bola Adeyemi", "+2348091112222")


def page_text(response) -> str:
    return " ".join(response.get_data(as_text=True).split())


def tokens(client) -> dict[str, str]:
    html = client.get("/wallet/transfer").get_data(as_text=True)
    csrf = CSRF_RE.search(html)
    return {"csrf_token": csrf.group(1) or csrf.group(2), "idempotency_key": KEY_RE.search(html).group(1)}


def review(client, **fields):
    data = tokens(client) | {"recipient": "bola@example.com", "amount": "1500", "note": ""} | fields
    return client.post("/wallet/transfer", data=data), data


REVIEW_TOKEN_RE = re.compile(r'name="review_token"[^>]*value="([^"]*)"')


def confirm_of(response, data: dict) -> dict:
    """The review page's confirm: ``data`` with ``confirm=1`` and its token."""
    found = REVIEW_TOKEN_RE.search(response.get_data(as_text=True))
    return data | {"confirm": "1", "review_token": found.group(1) if found else ""}


def send(client, **fields):
    response, data = review(client, **fields)
    if response.status_code != 200 or "Confirm transfer" not in page_text(response):
        return response, data
    data = confirm_of(response, data)
    return client.post("/wallet/transfer", data=data), data


def nothing_moved(ada: User, bola: User, ada_before: int = 1_000_000_00, bola_before: int = 0) -> None:
    assert wallet_balance(ada.wallet.id) == ada_before
    assert wallet_balance(bola.wallet.id) == bola_before
    assert db.session.scalar(sa.select(sa.func.count(P2PTransfer.id))) == 0
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.kind == KIND_P2P)) == 0


def test_masked_names(app):  # the app maps every model User relates to
    assert masked_name(User(email="a@x.ng", full_name="Ada Obi")) == "Ada O."
    assert masked_name(User(email="a@x.ng", full_name="  ada  ngozi obi ")) == "ada O."
    assert masked_name(User(email="a@x.ng", full_name="Ada")) == "Ada"
    assert masked_name(User(email="ada@x.ng", full_name=None)) == "a***@x.ng"


def test_review_then_send_moves_money_once_and_both_sides_see_it(client, auth, ada, bola):
    response, data = review(client, amount="1,500.50", note="For the suya")
    text = page_text(response)
    assert response.status_code == 200 and "Confirm transfer" in text
    assert "Bola A." in text and "Adeyemi" not in text
    assert "No fee" in text and "₦1,500.50" in text
    assert wallet_balance(ada.wallet.id) == 1_000_000_00  # the review moves nothing

    data = confirm_of(response, data)
    sent = client.post("/wallet/transfer", data=data)
    assert sent.status_code == 303
    reference = sent.headers["Location"].rsplit("/", 1)[1]
    assert sent.headers["Location"] == f"/wallet/transfers/{reference}"
    assert wallet_balance(ada.wallet.id) == 1_000_000_00 - 150_050
    assert wallet_balance(bola.wallet.id) == 150_050
    receipt = page_text(client.get(sent.headers["Location"]))
    assert "You sent ₦1,500.50" in receipt and "Bola A." in receipt and "For the suya" in receipt

    again = client.post("/wallet/transfer", data=data)  # a double submit
    assert again.status_code == 303 and again.headers["Location"] == sent.headers["Location"]
    assert wallet_balance(ada.wallet.id) == 1_000_000_00 - 150_050

    history = page_text(client.get("/history"))
    assert "Transfer to Bola A." in history and "For the suya" in history
    csv = client.get("/history/statement.csv").get_data(as_text=True)
    assert "Transfer to Bola A.: For the suya" in csv and reference in csv

    row = db.session.scalar(sa.select(P2PTransfer))
    messages = {(m.template, m.recipient) for m in db.session.scalars(sa.select(Message))
                if m.event_key.startswith(f"p2p:{row.id}:")}
    assert ("transfer_sent", "ada@example.com") in messages
    assert ("transfer_received", "bola@example.com") in messages
    assert_books_balance()

    auth.logout()
    auth.login("bola@example.com")
    bola_history = page_text(client.get("/history"))
    assert "Transfer from Ada O." in bola_history and "For the suya" in bola_history
    assert "You received ₦1,500.50" in page_text(client.get(f"/wallet/transfers/{reference}"))


def test_a_verified_phone_finds_the_recipient_an_unverified_one_does_not(client, ada, bola):
    response, _ = review(client, recipient="0809 111 2222")
    assert response.status_code == 200 and "Bola A." in page_text(response)
    carol = make_user("carol@example.com")
    carol.phone = "+2348050000001"  # on the account, never verified
    db.session.commit()
    refused, _ = review(client, recipient="08050000001")
    assert refused.status_code == 422
    assert transfers.UNKNOWN_RECIPIENT_MESSAGE in page_text(refused)


def test_the_receipt_is_for_the_two_parties_only(client, auth, ada, bola):
    sent, _ = send(client)
    location = sent.headers["Location"]
    make_user("eve@example.com")
    auth.logout()
    auth.login("eve@example.com")
    assert client.get(location).status_code == 404
    assert client.get("/wallet/transfers/tr_nosuchreference").status_code == 404


@pytest.mark.parametrize("fields, message", [
    ({"recipient": "ada@example.com"}, "You cannot send money to yourself"),
    ({"recipient": "ADA@Example.com"}, "You cannot send money to yourself"),
    ({"recipient": "+2348031234567"}, "You cannot send money to yourself"),
    ({"recipient": "nobody@example.com"}, transfers.UNKNOWN_RECIPIENT_MESSAGE),
    ({"recipient": "08077777777"}, transfers.UNKNOWN_RECIPIENT_MESSAGE),
    ({"recipient": "not an address"}, "Enter an email address, or a Nigerian mobile number"),
    ({"amount": "0"}, "Enter an amount greater than zero."),
    ({"amount": "-100"}, "Enter a positive amount."),
    ({"amount": "10.005"}, "Use at most two decimal places (kobo)."),
    ({"amount": "999999999999"}, "The largest amount is"),
    ({"amount": "1e9"}, "Enter an amount in naira"),
    ({"amount": ""}, "Enter an amount."),
    ({"note": "pay\u202eback"}, "Use letters, numbers, spaces and punctuation only in the note."),
    ({"note": "line\nbreak"}, "Use letters, numbers, spaces and punctuation only in the note."),
    ({"note": "nul\x00"}, "Use letters, numbers, spaces and punctuation only in the note."),
    ({"note": "\u200fmark"}, "Use letters, numbers, spaces and punctuation only in the note."),
    ({"note": "x" * 141}, "Keep the note to 140 characters."),
])
@pytest.mark.parametrize("step", ["review", "confirm"])
def test_refusals_say_why_and_move_nothing(client, ada, bola, fields, message, step):
    extra = {"confirm": "1"} if step == "confirm" else {}
    response, _ = review(client, **fields, **extra)
    assert response.status_code == 422, page_text(response)[:500]
    assert message in page_text(response).replace("\u00a0", " ")
    nothing_moved(ada, bola)


def test_insufficient_funds_is_refused_at_review_and_at_send(client, ada, bola):
    response, _ = review(client, amount="1000001")
    assert response.status_code == 422 and "Your wallet balance is ₦1,000,000.00" in page_text(response)
    response, _ = review(client, amount="1000001", confirm="1")
    assert response.status_code == 422 and "Your wallet balance is" in page_text(response)
    nothing_moved(ada, bola)


def test_a_key_reused_with_other_details_is_refused(client, ada, bola):
    sent, data = send(client, amount="100")
    assert sent.status_code == 303
    other = client.post("/wallet/transfer", data=data | {"amount": "200", "confirm": "1"})
    assert other.status_code == 422 and "already used for a different transfer" in page_text(other)
    assert wallet_balance(bola.wallet.id) == 100_00
    # The form comes back with a fresh key: its next submit is a new transfer.
    fresh = KEY_RE.search(other.get_data(as_text=True)).group(1)
    assert fresh != data["idempotency_key"]
    again = client.post("/wallet/transfer", data=data | {"amount": "200", "confirm": "1", "idempotency_key": fresh})
    assert again.status_code == 200 and "Confirm transfer" in page_text(again)  # a new transfer: reviewed first
    again = client.post("/wallet/transfer", data=confirm_of(again, data | {"amount": "200", "idempotency_key": fresh}))
    assert again.status_code == 303 and wallet_balance(bola.wallet.id) == 300_00


def test_an_admin_cannot_receive(client, ada):
    admin = make_user("admin@example.com")
    admin.is_admin = True
    db.session.commit()
    response, _ = review(client, recipient="admin@example.com")
    assert response.status_code == 422 and transfers.UNKNOWN_RECIPIENT_MESSAGE in page_text(response)


# --- Daily limits ----------------------------------------------------------------


def test_the_daily_limit_refusal_states_limit_left_and_reset(client, app, ada, bola):
    app.config["TRANSFER_DAILY_LIMIT_KOBO"] = 10_000_00
    assert send(client, amount="6000")[0].status_code == 303
    response, _ = review(client, amount="5000")
    text = page_text(response).replace("\u00a0", " ")
    assert response.status_code == 422
    assert "over your daily limit of ₦10,000.00" in text
    assert "You can send ₦4,000.00 more today" in text and "resets at midnight" in text
    refused, _ = review(client, amount="5000", confirm="1")  # the send itself checks it too
    assert refused.status_code == 422 and "daily limit" in page_text(refused)
    assert send(client, amount="4000")[0].status_code == 303
    assert wallet_balance(bola.wallet.id) == 10_000_00


def test_an_account_without_a_verified_phone_has_the_lower_limit(client, auth, app, bola):
    ada = make_user("ada@example.com", balance_kobo=1_000_000_00)
    verified(ada, "Ada Obi")  # email verified, no phone
    auth.login()
    assert transfers.daily_limit_kobo(ada) == app.config["UNVERIFIED_DAILY_LIMIT_KOBO"] == 50_000_00
    assert send(client, amount="50000")[0].status_code == 303
    response, _ = review(client, amount="1")
    assert response.status_code == 422 and "daily limit of ₦50,000.00" in page_text(response)


def test_23_59_and_00_01_lagos_fall_on_different_days(app, ada, bola):
    app.config["TRANSFER_DAILY_LIMIT_KOBO"] = 1_000_00
    lagos = limits.LAGOS
    late = datetime(2026, 12, 7, 23, 59, tzinfo=lagos).astimezone(timezone.utc)
    for now, amount in ((late, 1_000_00), (late + timedelta(minutes=2), 1_000_00)):
        clock.simulate(lambda now=now: now)
        try:
            sent = transfers.send(ada, bola, amount, None, secrets.token_urlsafe(16))
        finally:
            clock.simulate(None)
        assert sent.created
    with pytest.raises(limits.DailyLimitExceeded):
        clock.simulate(lambda: late + timedelta(minutes=3))
        try:
            transfers.send(ada, bola, 1, None, secrets.token_urlsafe(16))
        finally:
            clock.simulate(None)
    days = [limits.lagos_day(t.created_at) for t in db.session.scalars(sa.select(P2PTransfer).order_by(P2PTransfer.id))]
    assert [str(d) for d in days] == ["2026-12-07", "2026-12-08"]
    assert_books_balance()


def test_day_bounds_are_lagos_midnights():
    start, end = limits.day_bounds(datetime(2026, 12, 7, 23, 30, tzinfo=timezone.utc))  # 00:30 Lagos, 8 Dec
    assert start == datetime(2026, 12, 7, 23, 0, tzinfo=timezone.utc)
    assert end == datetime(2026, 12, 8, 23, 0, tzinfo=timezone.utc)


def test_other_kinds_do_not_count_against_the_transfer_limit(app, ada, bola):
    app.config["TRANSFER_DAILY_LIMIT_KOBO"] = 1_000_00
    from tests.helpers import make_payment
    make_payment(ada, amount_kobo=500_000_00)
    assert transfers.send(ada, bola, 1_000_00, None, secrets.token_urlsafe(16)).created


# --- Step-up and the lookup limit ------------------------------------------------


def test_a_first_transfer_to_a_new_recipient_needs_a_fresh_password(client, ada, bola):
    age_password_entry(ada.id, 11 * 60)
    response, _ = review(client, note="hi")
    assert response.status_code == 303 and response.headers["Location"].startswith("/account/confirm?next=")
    assert "recipient%3Dbola" in response.headers["Location"] or "recipient=bola" in response.headers["Location"]
    nothing_moved(ada, bola)
    # With a fresh password it goes; afterwards the same recipient needs none.
    age_password_entry(ada.id, 0)
    assert send(client)[0].status_code == 303
    age_password_entry(ada.id, 11 * 60)
    assert send(client)[0].status_code == 303
    assert wallet_balance(bola.wallet.id) == 3_000_00


@pytest.mark.parametrize("kind", [sessions.PASSWORD_RESET, sessions.EMAIL_CHANGED, sessions.PHONE_CHANGED])
def test_no_transfer_within_24_hours_of_a_reset_or_change(client, auth, ada, bola, kind):
    add_event(ada.id, kind, timedelta(hours=23))
    assert client.get("/wallet/transfer").status_code == 403
    data = {"recipient": "bola@example.com", "amount": "100", "confirm": "1",
            "idempotency_key": secrets.token_urlsafe(16), "csrf_token": auth.csrf("/")}
    refused = client.post("/wallet/transfer", data=data)
    assert refused.status_code == 403 and "Money can leave again from" in page_text(refused)
    nothing_moved(ada, bola)


def test_recipient_lookups_are_limited_to_distinct_ones_per_hour(client, app, ada, bola):
    app.config["TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR"] = 3
    for _ in range(5):  # the same recipient again and again is one lookup
        assert review(client)[0].status_code == 200
    for n in range(2):
        assert review(client, recipient=f"guess{n}@example.com")[0].status_code == 422
    limited, _ = review(client, recipient="guess9@example.com")
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    assert review(client)[0].status_code == 200  # one already seen still answers


def test_the_dashboard_links_to_the_transfer_page(client, ada):
    assert 'href="/wallet/transfer"' in client.get("/").get_data(as_text=True)


def test_a_transfer_is_one_p2p_ledger_transfer_with_its_row(app, ada, bola):
    sent = transfers.send(ada, bola, 2_500_00, "rent", secrets.token_urlsafe(16))
    posted = db.session.scalars(sa.select(Transfer).where(Transfer.kind == KIND_P2P)).all()
    assert len(posted) == 1 and posted[0].p2p_transfer_id == sent.transfer.id
    assert (posted[0].debit_wallet_id, posted[0].credit_wallet_id) == (ada.wallet.id, bola.wallet.id)
    assert check_invariants() == []


def test_the_checker_reports_a_p2p_without_its_row(app, ada, bola):
    transfers.send(ada, bola, 1_00, None, secrets.token_urlsafe(16))
    db.session.execute(sa.update(P2PTransfer).values(amount_kobo=2_00))
    db.session.commit()
    found = {(v.invariant, v.subject) for v in check_invariants()}
    assert ("p2p_matches", "transfer") in found and ("unexplained_movement", "transfer") in found


def test_the_checker_reports_a_row_without_its_transfer(app, ada, bola):
    db.session.add(P2PTransfer(reference="tr_orphan", sender_id=ada.id, recipient_id=bola.id,
                               sender_wallet_id=ada.wallet.id, recipient_wallet_id=bola.wallet.id,
                               amount_kobo=5_00, idempotency_key="k" * 20))
    db.session.commit()
    assert [(v.invariant, v.subject) for v in check_invariants()] == [("p2p_matches", "p2p_transfer")]


def test_ledger_refuses_a_second_transfer_for_one_p2p_row(app, ada, bola):
    sent = transfers.send(ada, bola, 1_00, None, secrets.token_urlsafe(16))
    with pytest.raises(sa.exc.IntegrityError):
        ledger.unit_of_work(ledger.post_transfer)(
            kind=KIND_P2P, debit_wallet_id=ada.wallet.id, credit_wallet_id=bola.wallet.id,
            amount_kobo=1_00, p2p_transfer_id=sent.transfer.id)
    assert_books_balance()


def test_the_admin_audit_pages_show_transfers_between_customers(client, auth, ada, bola):
    from tests.test_admin import make_admin

    sent = transfers.send(ada, bola, 7_000_00, "school fees", secrets.token_urlsafe(16))
    transfer_id = db.session.scalar(sa.select(Transfer.id).where(Transfer.p2p_transfer_id == sent.transfer.id))
    auth.logout()
    root = make_admin()
    auth.login("root@example.com", PASSWORD)
    auth.second_factor(root)
    listing = page_text(client.get("/admin/p2p"))
    assert sent.transfer.reference in listing and "ada@example.com" in listing
    assert "bola@example.com" in listing and "school fees" in listing and "₦7,000.00" in listing
    detail = page_text(client.get(f"/admin/transfers/{transfer_id}"))
    assert "Transfer between customers" in detail and sent.transfer.reference in detail
    assert "p2p_matches" in page_text(client.get("/admin/invariants"))


def test_both_sides_messages_render_and_follow_the_channel_choice(app, ada, bola):
    from billvend.notifications.services import render

    bola.token_channels = "email"
    db.session.commit()
    sent = transfers.send(ada, bola, 1_234_50, "suya money", secrets.token_urlsafe(16))
    rows = {(m.template, m.channel): m for m in db.session.scalars(
        sa.select(Message).where(Message.event_key.like(f"p2p:{sent.transfer.id}:%")))}
    assert set(rows) == {("transfer_sent", "email"), ("transfer_sent", "sms"), ("transfer_received", "email")}
    mail = render(rows[("transfer_received", "email")])
    assert mail.subject == "Ada O. sent you ₦1,234.50"
    assert "suya money" in mail.text and "suya money" in mail.html and sent.transfer.reference in mail.text
    sms = render(rows[("transfer_sent", "sms")]).sms
    assert sms.startswith("You sent NGN 1,234.50 to Bola A.") and "₦" not in sms
    assert rows[("transfer_sent", "sms")].recipient == "+2348031234567"


def test_a_refused_transfer_queues_no_message(app, ada, bola):
    with pytest.raises(ledger.InsufficientFunds):
        transfers.send(bola, ada, 1_00, None, secrets.token_urlsafe(16))
    assert db.session.scalar(sa.select(sa.func.count(Message.id)).where(Message.event_key.like("p2p:%"))) == 0


def test_the_history_loads_transfer_parties_per_page_not_per_row(client, ada, bola):
    others = [verified(make_user(f"friend{n}@example.com"), f"Friend {n}") for n in range(5)]
    for other in others:
        transfers.send(ada, other, 1_00, None, secrets.token_urlsafe(16))
    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", note)
    try:
        page = page_text(client.get("/history"))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", note)
    assert all(f"Transfer to Friend {n}" in page for n in range(5))
    user_reads = [s for s in statements if s.lstrip().startswith("SELECT") and "FROM users" in s]
    assert len(user_reads) <= 4, user_reads  # the session's user, sender and recipient batches
