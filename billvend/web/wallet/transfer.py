"""Send money to another customer (issue 27): ``GET,POST /wallet/transfer``
and the receipt ``/wallet/transfers/<reference>``.

Review before money moves: a submit of the form shows the review step
(wallet/transfer_review.html: the recipient's name masked, "Ada O.", the
amount, "No fee", the total); only the review's own button (``confirm=1``)
sends, then 303 to the receipt, and only what the review showed: the review
signs (sender, recipient account id, kobo, note, key) into ``review_token``,
and a confirm whose token does not match (the address passed to another
account meanwhile, the amount was changed, no review at all) gets the review
again instead. Both steps carry one ``idempotency_key``. The
recipient lookup counts against ``TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR``
distinct recipients (security.check_distinct_recipients). Step-up: no
transfer within 24 h of a password reset, email or phone change (every
request); a fresh password before the first transfer to a new recipient
(review and send).
"""

from __future__ import annotations

from flask import abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from itsdangerous import BadSignature, URLSafeSerializer

from billvend.ledger import limits
from billvend.ledger import services as ledger
from billvend.platform.money import format_naira
from billvend.transfers import services as transfers
from billvend.transfers.models import masked_name
from billvend.web.forms import new_idempotency_key
from billvend.web.security import check_distinct_recipients, require_no_hold, require_step_up
from billvend.web.wallet import bp
from billvend.web.wallet.forms import TransferForm


def _form_page(form: TransferForm, status: int | None = None):
    if status is None:
        status = 422 if form.errors else 200
    return render_template("wallet/transfer.html", form=form,
                           today=transfers.todays_use(current_user)), status


def _prefill(form: TransferForm) -> None:
    """Back from ``/account/confirm`` (step-up): the form as it was typed."""
    for name in ("recipient", "amount", "note"):
        value = request.args.get(name, "")
        if value and len(value) <= 254:
            getattr(form, name).data = value


def _refused(form: TransferForm, field, message: str):
    field.errors.append(message)
    return _form_page(form, 422)


def _precheck(form: TransferForm, recipient):
    """The refusals the review step can already give (the send checks all of
    them again under the wallet lock); None when the review may be shown."""
    if recipient.id == current_user.id:
        return _refused(form, form.recipient, str(transfers.ToYourself()))
    amount_kobo = form.amount.kobo
    if amount_kobo > current_user.wallet.balance_kobo:
        return _refused(form, form.amount, _insufficient_message())
    today = transfers.todays_use(current_user)
    if today.spent_kobo + amount_kobo > today.limit_kobo:
        return _refused(form, form.amount, str(limits.DailyLimitExceeded(today, amount_kobo)))
    return None


def _insufficient_message() -> str:
    return (f"Your wallet balance is {format_naira(current_user.wallet.balance_kobo)}. "
            "Fund your wallet or enter a smaller amount.")


def _step_up_for(form: TransferForm, recipient):
    """A fresh password before the first transfer to ``recipient``; back to
    the filled-in form afterwards."""
    if transfers.has_sent_to(current_user.id, recipient.id):
        return None
    back = url_for("wallet.transfer", recipient=form.recipient.data, amount=form.amount.data,
                   note=form.note.data or None)
    return require_step_up(next_url=back)


def _review_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="transfer-review")


def _reviewed(form: TransferForm, recipient) -> list:
    """What the review step showed, as the review token signs it: who sends,
    to which account (its id, not the address typed: the address may pass to
    someone else before the confirm), the kobo, the note and the form's key."""
    return [current_user.id, recipient.id, form.amount.kobo, form.clean_note, form.idempotency_key.data]


def _was_reviewed(form: TransferForm, recipient) -> bool:
    """True when the confirm carries the token of a review that showed
    exactly this recipient, amount and note."""
    try:
        return _review_serializer().loads(form.review_token.data or "") == _reviewed(form, recipient)
    except BadSignature:
        return False


def _review_page(form: TransferForm, recipient):
    """The review step (200), signed so its confirm sends only what it showed;
    when a confirm came without a matching review, it says the details changed."""
    changed = form.confirm.data == "1"
    form.confirm.data = ""
    return render_template("wallet/transfer_review.html", form=form, recipient=recipient,
                           recipient_name=masked_name(recipient), changed=changed,
                           review_token=_review_serializer().dumps(_reviewed(form, recipient)))


def _send(form: TransferForm, recipient):
    try:
        sent = transfers.send(current_user, recipient, form.amount.kobo, form.clean_note,
                              form.idempotency_key.data)
    except ledger.InsufficientFunds:
        return _refused(form, form.amount, _insufficient_message())
    except limits.DailyLimitExceeded as exc:
        return _refused(form, form.amount, str(exc))
    except transfers.IdempotencyConflict as exc:
        return _conflict(form, exc)
    except transfers.TransferError as exc:
        return _refused(form, form.recipient, str(exc))
    return redirect(url_for("wallet.transfer_receipt", reference=sent.transfer.reference), code=303)


def _repeat(form: TransferForm, earlier):
    """A submit whose key already made a transfer: the first result, or the
    refusal of a key reused with other details; no lookup, no step-up."""
    recipient = transfers.find_recipient(email=form.recipient_email, phone=form.recipient_phone)
    if recipient is None or recipient.id != earlier.recipient_id:
        return _conflict(form, transfers.IdempotencyConflict())
    return _send(form, recipient)


def _conflict(form: TransferForm, exc: transfers.IdempotencyConflict):
    """The form's key already sent another transfer (the form was used again
    after sending, e.g. with Back): say so, and give the form a fresh key so
    the next submit is a new transfer, not the same refusal again."""
    form.idempotency_key.data = new_idempotency_key()
    return _refused(form, form.amount, str(exc))


@bp.route("/transfer", methods=["GET", "POST"])
@login_required
def transfer():
    """GET: the form. POST (``recipient``, ``amount``, ``note``,
    ``idempotency_key``): the review step; with ``confirm=1`` the transfer,
    303 to its receipt. Refusals are the form again (422), nothing moved."""
    held = require_no_hold()
    if held is not None:
        return held
    form = TransferForm()
    if request.method == "GET":
        _prefill(form)
        return _form_page(form)
    if form.edit.data:
        return _form_page(form, 200)
    if not form.validate_on_submit():
        return _form_page(form)
    earlier = transfers.find_by_key(current_user.id, form.idempotency_key.data)
    if earlier is not None:
        return _repeat(form, earlier)
    check_distinct_recipients(form.recipient_key)
    recipient = transfers.find_recipient(email=form.recipient_email, phone=form.recipient_phone)
    if recipient is None:
        return _refused(form, form.recipient, transfers.UNKNOWN_RECIPIENT_MESSAGE)
    refused = _precheck(form, recipient)
    if refused is None:
        refused = _step_up_for(form, recipient)
    if refused is not None:
        return refused
    if form.confirm.data != "1" or not _was_reviewed(form, recipient):
        return _review_page(form, recipient)
    return _send(form, recipient)


@bp.get("/transfers/<reference>")
@login_required
def transfer_receipt(reference: str):
    """One transfer's receipt, for its sender or its recipient; anyone else 404."""
    record = transfers.for_party(reference[:40], current_user.id)
    if record is None:
        abort(404)
    return render_template("wallet/transfer_receipt.html", transfer=record,
                           sent=record.sender_id == current_user.id)
