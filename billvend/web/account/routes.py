"""``/account``: profile (full name, phone), password change, the list of
active sessions with "log out everywhere", and the admins' second factor.

Money-sensitive changes need a fresh login: the password change asks for the
current password; enrolling a second factor needs the password typed within
``FRESH_LOGIN_SECONDS`` (``/account/confirm`` asks for it again). Every
wrong password or code typed here goes through
:func:`billvend.web.security.reentry`: the fifth wrong one in a session ends it.
"""

from __future__ import annotations

from flask import abort, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required

import sqlalchemy as sa

from billvend.accounts import links, phone_verification, sessions, twofactor
from billvend.platform import transactions
from billvend.web.account import bp
from billvend.web.account.forms import (
    ChangeEmailForm, ChangePasswordForm, ConfirmPasswordForm, PlainForm, ProfileForm, TokenChannelsForm,
    TwoFactorForm,
)
from billvend.platform.extensions import db
from billvend.accounts.models import User
from billvend.web.auth import messages as auth_messages
from billvend.web.security import EMAIL_TAKEN_ANSWERED, referrer_path, reentry, safe_next

PENDING_SECRET_KEY = "_totp_pending_secret"


@bp.before_request
@login_required
def _signed_in_only():
    return None


@transactions.unit_of_work
def _save_profile(user_id: int, full_name: str | None, phone: str | None) -> bool:
    """Save the profile; a changed phone is unverified again and recorded
    (:func:`billvend.accounts.phone_verification.change_phone`).

    :returns: True when the phone changed."""
    db.session.get(User, user_id).full_name = full_name
    db.session.flush()
    return phone_verification.change_phone(user_id, phone)


@transactions.unit_of_work
def _set_password(user_id: int, password: str) -> None:
    db.session.get(User, user_id).set_password(password)
    links.kill_password_resets(user_id)  # dead by their digest already; now visibly used
    links.kill_email_changes(user_id)  # an address change the old password's holder asked


def _profile_page(form: ProfileForm, status: int = 200, channels_form: TokenChannelsForm | None = None):
    channels_form = channels_form or TokenChannelsForm(prefix="channels",
                                                       token_channels=current_user.token_channels)
    return render_template(
        "account/profile.html", form=form, sessions=sessions.active_sessions(current_user.id),
        end_form=PlainForm(prefix="end"), channels_form=channels_form,
        pending_email=links.pending_email(current_user.id),
        phone_verified=phone_verification.is_verified(current_user)), status


@transactions.unit_of_work
def _save_token_channels(user_id: int, choice: str) -> None:
    """Store ``choice`` ("both", "sms" or "email", validated by the form) as
    where ``user_id``'s tokens and refund notices go."""
    db.session.get(User, user_id).token_channels = choice


@bp.route("", methods=["GET", "POST"])
def profile():
    form = ProfileForm(obj=current_user if request.method == "GET" else None)
    if form.validate_on_submit():
        changed = _save_profile(current_user.id, (form.full_name.data or "").strip() or None,
                                form.phone.data or None)
        flash("Your details are saved." + (" Verify your new phone number with a code by SMS."
                                           if changed and form.phone.data else ""), "success")
        return redirect(url_for("account.profile"), code=303)
    return _profile_page(form, 422 if form.errors else 200)


@bp.route("/token-channels", methods=["POST"])
def token_channels():
    """Save where tokens and refund notices go: SMS, email or both."""
    form = TokenChannelsForm(prefix="channels")
    if not form.validate_on_submit():
        return _profile_page(ProfileForm(obj=current_user), 422, channels_form=form)
    _save_token_channels(current_user.id, form.token_channels.data)
    flash({"both": "Your tokens will come by SMS and email.", "sms": "Your tokens will come by SMS.",
           "email": "Your tokens will come by email."}[form.token_channels.data], "success")
    return redirect(url_for("account.profile"), code=303)


@bp.route("/sessions/end-others", methods=["POST"])
def end_other_sessions():
    if PlainForm(prefix="end").validate_on_submit():
        ended = sessions.end_other_sessions(current_user.id)
        flash(f"Logged out everywhere else ({ended} other session{'s' if ended != 1 else ''} ended).",
              "success")
    return redirect(url_for("account.profile"), code=303)


@bp.route("/sessions/<int:session_id>/end", methods=["POST"])
def end_session(session_id: int):
    if PlainForm(prefix="end").validate_on_submit():
        if sessions.end_session(current_user.id, session_id):
            flash("That session is logged out.", "success")
        else:
            flash("That session had already ended.", "info")
    return redirect(url_for("account.profile"), code=303)


@bp.route("/password", methods=["GET", "POST"])
def password():
    form = ChangePasswordForm(account_email=current_user.email)
    if form.validate_on_submit():
        right, ended = reentry("password", lambda: current_user.check_password(form.current_password.data))
        if ended is not None:
            return ended
        if not right:
            form.current_password.errors.append("That is not your current password.")
        elif form.password.data == form.current_password.data:
            form.password.errors.append("Choose a password different from the current one.")
        else:
            _set_password(current_user.id, form.password.data)
            ended = sessions.end_other_sessions(current_user.id)
            session.pop(sessions.MUST_CHANGE_PASSWORD_KEY, None)
            sessions.mark_fresh()
            flash("Your password is changed"
                  + (f"; {ended} other session{'s' if ended != 1 else ''} logged out." if ended else "."),
                  "success")
            return redirect(url_for("account.profile"), code=303)
    return render_template("account/password.html", form=form,
                           forced=bool(session.get(sessions.MUST_CHANGE_PASSWORD_KEY))), \
        422 if form.errors else 200


def _email_change_problem(form: ChangeEmailForm) -> str | None:
    """Why the new address in ``form`` cannot be asked for, or None."""
    if form.email.data == current_user.email:
        return "That is already your address."
    if db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.email == form.email.data)):
        g.setdefault(EMAIL_TAKEN_ANSWERED, True)  # rate-limited: it tells which addresses exist
        return "Another account uses that address."
    return None


@bp.route("/email", methods=["GET", "POST"])
def email():
    """Change the address: a link to the new one, a notice to the current
    one, which stays the account's until the link is followed."""
    form = ChangeEmailForm()
    if form.validate_on_submit():
        right, ended = reentry("password", lambda: current_user.check_password(form.current_password.data))
        if ended is not None:
            return ended
        problem = None if right else "That is not your current password."
        if problem:
            form.current_password.errors.append(problem)
        elif (problem := _email_change_problem(form)):
            form.email.errors.append(problem)
        else:
            auth_messages.email_change(current_user.id, form.email.data)
            flash(f"We sent a link to {form.email.data}. Your address stays {current_user.email} "
                  "until you follow it.", "success")
            return redirect(url_for("account.profile"), code=303)
    return render_template("account/email.html", form=form,
                           pending_email=links.pending_email(current_user.id)), 422 if form.errors else 200


@bp.route("/email/cancel", methods=["POST"])
def cancel_email_change():
    """Cancel a pending address change: its link stops working and the
    account keeps its address (a mistyped address, a change of mind)."""
    if PlainForm(prefix="cancel-email").validate_on_submit():
        pending = links.pending_email(current_user.id)
        if pending and transactions.run(lambda: links.kill_email_changes(current_user.id)):
            flash(f"Cancelled: the link sent to {pending} no longer works. "
                  f"Your address stays {current_user.email}.", "success")
        else:
            flash("There is no address change to cancel.", "info")
    return redirect(url_for("account.profile"), code=303)


@bp.route("/email/resend", methods=["POST"])
def resend_verification():
    """Send the verification link again (the pending address's, else the
    current one's); rate-limited per user."""
    if PlainForm(prefix="verify").validate_on_submit():
        if current_user.email_verified_at and not links.pending_email(current_user.id):
            flash("Your email address is already verified.", "info")
        else:
            address = auth_messages.resend_verification(current_user.id)
            flash(f"We sent a new link to {address}. It works for 24 hours.", "success")
    return redirect(safe_next(referrer_path(), url_for("account.profile")), code=303)


@bp.route("/confirm", methods=["GET", "POST"])
def confirm_password():
    form = ConfirmPasswordForm()
    if form.validate_on_submit():
        right, ended = reentry("password", lambda: current_user.check_password(form.password.data))
        if ended is not None:
            return ended
        if right:
            sessions.mark_fresh()
            return redirect(safe_next(request.args.get("next"), url_for("account.profile")), code=303)
        form.password.errors.append("That is not your password.")
    return render_template("account/confirm.html", form=form), 422 if form.errors else 200


@bp.route("/two-factor", methods=["GET", "POST"])
def two_factor():
    """Admins: give the second factor for this session, or enrol first."""
    if not current_user.is_admin:
        abort(404)
    target = safe_next(request.args.get("next"), url_for("admin.overview"))
    form = TwoFactorForm()
    if current_user.has_second_factor:
        if form.validate_on_submit():
            right, ended = reentry("second-factor code",
                                   lambda: twofactor.verify(current_user.id, form.code.data))
            if ended is not None:
                return ended
            if right:
                sessions.mark_second_factor()
                return redirect(target, code=303)
            form.code.errors.append("That code is not right (or was already used). Try the next one.")
        return render_template("account/two_factor.html", form=form,
                               left=twofactor.recovery_codes_left(current_user.id)), \
            422 if form.errors else 200
    if not sessions.is_fresh():
        return redirect(url_for("account.confirm_password", next=request.full_path), code=303)
    secret = session.get(PENDING_SECRET_KEY)
    if not secret:
        secret = session[PENDING_SECRET_KEY] = twofactor.new_secret()
    if form.validate_on_submit():
        issued: list[list[str]] = []

        def confirm_enrolment() -> bool:
            codes = twofactor.enable(current_user.id, secret, form.code.data)
            if codes:
                issued.append(codes)
            return bool(codes)

        right, ended = reentry("enrolment code", confirm_enrolment)
        if ended is not None:
            return ended
        if right:
            session.pop(PENDING_SECRET_KEY, None)
            sessions.mark_second_factor()
            return render_template("account/recovery_codes.html", codes=issued[0], target=target)
        form.code.errors.append("That code is not right. Check the time on your phone and try the next one.")
    uri = twofactor.provisioning_uri(secret, current_user.email)
    return render_template("account/enrol.html", form=form, secret=secret,
                           qr_svg=twofactor.qr_svg(uri)), 422 if form.errors else 200
