"""Account recovery and email verification (issue 24): ``/forgot-password``,
``/reset-password/<token>``, ``/verify-email/<token>``.

* /forgot-password answers the same page, status and (padded to
  :data:`FORGOT_FLOOR_SECONDS`) time whether or not the address has an
  account; the link goes out by the outbox. Rate-limited per address and per
  IP (billvend.web.security.ROUTE_LIMITS).
* A reset ends every session and remember token of the user (this browser's
  too) and sends them to /login: the password alone never passes an admin's
  second factor.
* A bad link (malformed, tampered, expired, used, stale, another account's)
  gets a page saying so (400 or 410) and changes nothing.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from flask import flash, redirect, render_template, url_for
from flask_login import current_user, logout_user

from billvend.accounts import links, sessions
from billvend.accounts.links import LinkProblem
from billvend.accounts.models import LINK_PASSWORD_RESET, User
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.web.auth import bp
from billvend.web.auth import messages as auth_messages
from billvend.web.auth.forms import ForgotPasswordForm, ResetPasswordForm

log = logging.getLogger(__name__)

#: Every answer to a valid /forgot-password POST takes at least this long,
#: so the time of the database work (a link and a message written, or
#: nothing) does not tell which addresses have an account.
FORGOT_FLOOR_SECONDS = 0.25

#: What a customer reads for each reason a link does not work.
PROBLEMS = {
    links.INVALID: "This link is not valid. Check that you copied the whole link from the email.",
    links.EXPIRED: "This link has expired.",
    links.USED: "This link has already been used (or a newer email replaced it).",
    links.STALE: ("This link no longer works: the password was changed after it was sent, or the account "
                  "moved to another email address."),
    links.FOREIGN: "This link is for another account than the one signed in here. Log out, then open it again.",
    links.TAKEN: ("Another account uses that address now, so your account keeps its current one. "
                  "Nothing was changed."),
}


def link_problem(reason: str, purpose: str):
    """The page for a link that does not work: 400 for one that never was
    valid, 410 for one that was and is no more; nothing changed."""
    status = {links.INVALID: 400, links.FOREIGN: 400, links.TAKEN: 409}.get(reason, 410)
    return render_template("auth/link_problem.html", message=PROBLEMS[reason], purpose=purpose,
                           reset=purpose == LINK_PASSWORD_RESET), status


@bp.route("/forgot-password", methods=["GET", "POST"])
def forgot_password():
    form = ForgotPasswordForm()
    if not form.validate_on_submit():
        return render_template("auth/forgot_password.html", form=form), 422 if form.errors else 200
    started = time.monotonic()
    known = auth_messages.password_reset(form.email.data)
    log.info("password reset asked for %s address", "a known" if known else "an unknown")
    time.sleep(max(0.0, FORGOT_FLOOR_SECONDS - (time.monotonic() - started)))
    return render_template("auth/forgot_password_sent.html"), 200


def _reset_user(token: str) -> User:
    """The user a usable reset link is for, refusing another account's
    link while someone is signed in. :raises LinkProblem:"""
    _, user = links.find(token, LINK_PASSWORD_RESET)
    if current_user.is_authenticated and current_user.id != user.id:
        raise LinkProblem(links.FOREIGN)
    return user


@transactions.unit_of_work
def _apply_reset(token: str, password_hash: str) -> int:
    """Store the new password through the link, end every session and
    remember token of the user, record the ``password_reset`` event and
    queue its notice; one unit. :returns: the user's id. :raises LinkProblem:"""
    user = links.reset_password(token, password_hash)
    ended = sessions.end_everything(db.session, user.id)
    sessions.record_event(db.session, user.id, sessions.PASSWORD_RESET)
    auth_messages.password_was_reset(user)
    log.info("user %s reset their password by email link; %d sessions ended", user.id, ended)
    return user.id


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    try:
        user = _reset_user(token)
    except LinkProblem as problem:
        return link_problem(problem.reason, LINK_PASSWORD_RESET)
    form = ResetPasswordForm(account_email=user.email)
    if form.validate_on_submit():
        template = User(email=user.email)
        template.set_password(form.password.data)  # hash once, outside the unit and its retries
        db.session.rollback()
        try:
            _apply_reset(token, template.password_hash)
        except LinkProblem as problem:
            return link_problem(problem.reason, LINK_PASSWORD_RESET)
        if current_user.is_authenticated:
            logout_user()
            sessions.end()
        flash("Your password is changed. Sign in with it.", "success")
        return redirect(url_for("auth.login"), code=303)
    return render_template("auth/reset_password.html", form=form, token=token), 422 if form.errors else 200


@transactions.unit_of_work
def _apply_verification(token: str, signed_in_user_id: int | None) -> links.Verified:
    """Follow a verification link in one unit; an address change records
    the ``email_changed`` event. :raises LinkProblem:"""
    verified = links.verify_email(token, signed_in_user_id)
    if verified.changed_from:
        sessions.record_event(db.session, verified.user_id, sessions.EMAIL_CHANGED)
    return verified


@bp.route("/verify-email/<token>")
def verify_email(token: str):
    signed_in = current_user.id if current_user.is_authenticated else None
    try:
        verified = _apply_verification(token, signed_in)
    except LinkProblem as problem:
        return link_problem(problem.reason, "verify_email")
    except sa.exc.IntegrityError:
        # Another account took the address between our check and the switch.
        return link_problem(links.TAKEN, "verify_email")
    if verified.changed_from:
        flash(f"Your account's email address is now {verified.email}.", "success")
    else:
        flash(f"Thank you: {verified.email} is verified.", "success")
    return redirect(url_for("account.profile" if signed_in else "auth.login"), code=303)
