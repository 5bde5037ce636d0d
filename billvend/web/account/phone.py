"""``/account/phone``: prove the account's phone is the customer's with a
code sent by SMS (issue 24; the rules are in
:mod:`billvend.accounts.phone_verification`).

* ``POST /account/phone/code`` sends a code (and "send a new code"): the
  code row and its SMS are written in one unit of work, and the outbox sends
  the SMS after that commit (``secret_code`` is blanked from the outbox row
  once sent; admins see it "(hidden)"). Limited per customer by
  ``RATELIMIT_PHONE_CODE_USER`` and per number by ``RATELIMIT_PHONE_CODE_PHONE``
  (429 with ``Retry-After``).
* ``GET /account/phone`` shows the phone's state and the code form;
  ``POST /account/phone`` (``code``) takes one try.

Every refusal is the page again with a clear message (422) that changes
nothing but the count of tries; never a 500.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy.exc import IntegrityError

from billvend.accounts import phone_verification as verification
from billvend.notifications.services import notify
from billvend.platform import transactions
from billvend.platform.phones import display
from billvend.web.account import bp
from billvend.web.account.forms import PhoneCodeForm, PlainForm

#: What the customer is told for each problem.
WORDS = {
    verification.NO_PHONE: "Add your mobile number on your account page first.",
    verification.ALREADY_VERIFIED: "Your phone number is already verified.",
    verification.TAKEN: ("This phone number is already verified on another account, so it cannot be "
                         "verified on this one. Use another number, or sign in to the account that has it."),
    verification.NO_CODE: "Ask for a code first: press \"Send me a code\".",
    verification.EXPIRED: "That code has expired (a code works for 10 minutes). Ask for a new one.",
    verification.USED: "That code was already used. Ask for a new one if you need to.",
    verification.EXHAUSTED: "This code was typed wrong too many times and no longer works. Ask for a new one.",
    verification.OTHER_PHONE: ("That code was sent to a number that is no longer on your account. "
                               "Ask for a new code."),
}


def _wrong_words(tries_left: int) -> str:
    if tries_left <= 0:
        return "That code is not right, and that was the last try. Ask for a new code."
    return f"That code is not right. {tries_left} tr{'ies' if tries_left != 1 else 'y'} left."


@transactions.unit_of_work
def _send_code(user_id: int) -> verification.IssuedCode:
    """A new code for ``user_id`` and its SMS, in one unit of work.

    :raises PhoneCodeProblem: no phone, already verified, verified elsewhere.
    """
    issued = verification.issue_code(user_id)
    notify(f"user:{user_id}:phone-code:{issued.code_id}", "sms", issued.phone, "phone_code",
           {"secret_code": issued.code, "minutes": verification.CODE_SECONDS // 60},
           user_id=user_id, secret=True)
    return issued


def _try_code(user_id: int, code: str) -> str | None:
    """One try of ``code``; None when the phone is now verified, else the
    words for the form."""
    try:
        result = transactions.run(verification.check_code, user_id, code)
    except IntegrityError:  # another account verified this phone in the same instant
        return WORDS[verification.TAKEN]
    if result.verified:
        return None
    if result.problem == verification.WRONG:
        return _wrong_words(result.tries_left)
    return WORDS[result.problem]


def _phone_page(form: PhoneCodeForm, status: int = 200):
    user = current_user
    code = verification.newest_code(user.id) if user.phone else None
    return render_template(
        "account/phone.html", form=form, send_form=PlainForm(prefix="send"), phone=display(user.phone),
        verified=verification.is_verified(user), code_sent=code is not None and code.phone == user.phone
        and code.used_at is None), status


@bp.route("/phone", methods=["GET", "POST"])
def phone():
    """GET: the phone's state and the code form. POST (``code``): one try."""
    form = PhoneCodeForm()
    if form.validate_on_submit():
        problem = _try_code(current_user.id, form.code.data)
        if problem is None:
            flash(f"Your phone number {display(current_user.phone)} is verified.", "success")
            return redirect(url_for("account.profile"), code=303)
        form.code.errors.append(problem)
    return _phone_page(form, 422 if form.errors else 200)


@bp.route("/phone/code", methods=["POST"])
def send_phone_code():
    """Send a (new) code by SMS to the account's phone."""
    if not PlainForm(prefix="send").validate_on_submit():
        flash("The form had expired. Press \"Send me a code\" again.", "error")
        return redirect(url_for("account.phone"), code=303)
    try:
        issued = _send_code(current_user.id)
    except verification.PhoneCodeProblem as problem:
        flash(WORDS[problem.reason], "info" if problem.reason == verification.ALREADY_VERIFIED else "error")
        return redirect(url_for("account.phone"), code=303)
    flash(f"We sent a 6-digit code to {display(issued.phone)}. It works for "
          f"{verification.CODE_SECONDS // 60} minutes.", "success")
    return redirect(url_for("account.phone"), code=303)
