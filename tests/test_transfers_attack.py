"""Attacks on transfers between customers (issue 27), each a defect found in
review: the confirm bound to what the review showed, and notes that read
differently on the other side."""

from __future__ import annotations

import re
import secrets

import pytest
import sqlalchemy as sa

from billvend.ledger.invariants import check_invariants
from billvend.ledger.models import KIND_P2P, Transfer, Wallet
from billvend.platform.extensions import db
from billvend.transfers.models import P2PTransfer
from tests.helpers import make_user, wallet_balance
from tests.test_transfers import ada, bola, page_text, review, verified  # noqa: F401 - fixtures

REVIEW_TOKEN_RE = re.compile(r'name="review_token"[^>]*value="([^"]*)"')


def review_token(response) -> str:
    found = REVIEW_TOKEN_RE.search(response.get_data(as_text=True))
    return found.group(1) if found else ""


def test_the_confirm_does_not_send_to_whoever_holds_the_address_now(client, ada, bola):  # noqa: F811
    """Reviewed "Bola A."; Bola moves to another address and Eve takes the old
    one before the confirm: the confirm must not pay Eve unseen."""
    reviewed, data = review(client)
    assert "Bola A." in page_text(reviewed)
    bola.email = "bola.new@example.com"
    db.session.commit()
    eve = verified(make_user("bola@example.com"), "Eve Thief")
    confirm = client.post("/wallet/transfer", data=data | {"confirm": "1",
                                                            "review_token": review_token(reviewed)})
    assert confirm.status_code != 303
    assert wallet_balance(eve.wallet.id) == 0
    assert "Eve T." in page_text(confirm)  # the review again, with the name of who it would go to
    assert db.session.scalar(sa.select(sa.func.count(P2PTransfer.id))) == 0


def test_a_confirm_without_the_review_moves_nothing(client, ada, bola):  # noqa: F811
    """A POST with confirm=1 that never went through the review step (or
    changed the amount after it) shows the review, it does not send."""
    direct, _ = review(client, confirm="1")
    assert direct.status_code == 200 and "Confirm transfer" in page_text(direct)
    assert wallet_balance(bola.wallet.id) == 0
    reviewed, data = review(client, amount="100")
    changed = client.post("/wallet/transfer", data=data | {
        "amount": "9000", "confirm": "1", "review_token": review_token(reviewed)})
    assert changed.status_code == 200 and "₦9,000.00" in page_text(changed)
    assert wallet_balance(bola.wallet.id) == 0
    confirmed = client.post("/wallet/transfer", data=data | {
        "amount": "9000", "confirm": "1", "review_token": review_token(changed)})
    assert confirmed.status_code == 303 and wallet_balance(bola.wallet.id) == 9_000_00


@pytest.mark.parametrize("note", ["pay\u061cback",  # ARABIC LETTER MARK, a bidi control
                                  "line\u2028break", "para\u2029break",  # line/paragraph separators
                                  "zero\u200bwidth\ufeffjoin"])  # invisible format characters
def test_notes_with_hidden_or_line_breaking_characters_are_refused(client, ada, bola, note):  # noqa: F811
    response, _ = review(client, note=note)
    assert response.status_code == 422
    assert "Use letters, numbers, spaces and punctuation only in the note." in page_text(response)


def test_the_checker_reports_a_p2p_into_a_system_wallet(app, ada, bola):  # noqa: F811
    """A forged p2p row and ledger transfer, both naming a system wallet as
    the recipient, agree with each other: the checker still reports it."""
    system = db.session.scalar(sa.select(Wallet).where(Wallet.user_id.is_(None)))
    row = P2PTransfer(reference="tr_forged", sender_id=ada.id, recipient_id=bola.id,
                      sender_wallet_id=ada.wallet.id, recipient_wallet_id=system.id,
                      amount_kobo=1_00, idempotency_key=secrets.token_urlsafe(16))
    db.session.add(row)
    db.session.flush()
    db.session.add(Transfer(kind=KIND_P2P, debit_wallet_id=ada.wallet.id, credit_wallet_id=system.id,
                            amount_kobo=1_00, p2p_transfer_id=row.id))
    db.session.commit()
    assert ("p2p_matches", "transfer") in {(v.invariant, v.subject) for v in check_invariants()}


def test_the_checker_reports_a_p2p_row_paying_another_user_than_its_recipient(app, ada, bola):  # noqa: F811
    """The row says Bola received; the wallet credited is Carol's."""
    from billvend.ledger import services as ledger
    from billvend.platform.transactions import unit_of_work

    carol = make_user("carol@example.com")

    @unit_of_work
    def forge():
        row = P2PTransfer(reference="tr_forged2", sender_id=ada.id, recipient_id=bola.id,
                          sender_wallet_id=ada.wallet.id, recipient_wallet_id=carol.wallet.id,
                          amount_kobo=1_00, idempotency_key=secrets.token_urlsafe(16))
        db.session.add(row)
        db.session.flush()
        ledger.post_transfer(kind=KIND_P2P, debit_wallet_id=ada.wallet.id,
                             credit_wallet_id=carol.wallet.id, amount_kobo=1_00, p2p_transfer_id=row.id)

    forge()
    assert "p2p_matches" in {v.invariant for v in check_invariants()}


def test_a_note_with_an_emoji_sequence_is_still_a_note(client, ada, bola):  # noqa: F811
    response, _ = review(client, note="for the kids \U0001F468\u200d\U0001F469\u200d\U0001F467")
    assert response.status_code == 200 and "Confirm transfer" in page_text(response)


# --- Attacks that held (kept so they keep holding) ---------------------------------


@pytest.mark.parametrize("amount", ["\u0661\u0660\u0660", "\uff11\uff10\uff10", "100.0000001", "1_000",
                                    "0.001", "NaN", "inf", "-0", "0x64", "1e2", " ", "₦-5"])
def test_odd_amounts_are_refused(client, ada, bola, amount):  # noqa: F811
    response, _ = review(client, amount=amount)
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(P2PTransfer.id))) == 0


def test_spellings_of_one_recipient_are_one_lookup(client, app, ada, bola):  # noqa: F811
    """Case, spaces and phone formats are the same recipient: one distinct
    lookup, so they neither use up the limit nor get around it."""
    app.config["TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR"] = 2
    for spelling in (" BOLA@example.com ", "bola@EXAMPLE.com", "\uff42ola@example.com",
                     "08091112222", "+234 809 111 2222", "2348091112222", "0809-111-2222"):
        response, _ = review(client, recipient=spelling)
        assert response.status_code == 200 and "Bola A." in page_text(response), spelling
    assert review(client, recipient="x1@example.com")[0].status_code == 429


def test_a_note_with_markup_is_text_everywhere(client, auth, ada, bola):  # noqa: F811
    from billvend.notifications.models import Message
    from billvend.notifications.services import render
    from tests.test_transfers import send

    note = '<img src=x onerror=alert(1)>"=cmd|'
    sent, _ = send(client, note=note)
    assert sent.status_code == 303
    assert "<img src=x" not in client.get(sent.headers["Location"]).get_data(as_text=True)
    assert "<img src=x" not in client.get("/history").get_data(as_text=True)
    for message in db.session.scalars(sa.select(Message).where(Message.event_key.like("p2p:%"))):
        html = render(message).html
        assert html is None or "<img src=x" not in html
