"""Sign up, log in and log out (Flask-Login over server-side sessions, hashed
passwords, CSRF; rate limits in billvend.web.security.ROUTE_LIMITS)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from billvend.ledger import services as ledger
from billvend.accounts import sessions
from billvend.platform import transactions
from billvend.web.auth import bp
from billvend.web.auth import messages as auth_messages
from billvend.web.auth.forms import LoginForm, LogoutForm, SignupForm
from billvend.platform.extensions import db
from billvend.accounts.models import User
from billvend.web.security import (
    SIGNUP_WRONG_PASSWORD, check_password_evenly, is_known_device, password_problem, remember_device,
    safe_next,
)

#: Said when the email already has an account, instead of confirming it:
#: the visitor may not be its owner (account enumeration).
ALREADY_NEUTRAL = ("We could not create an account with these details. If you already have an "
                   "account, log in instead.")


#: What the owner is told at sign-in about each kind of security event.
EVENT_NOTICES = {
    sessions.REAUTH_LOCKED: ("One of your signed-in sessions was ended on {when} because a wrong "
                             "password or code was typed 5 times in it. If that was not you, change "
                             "your password."),
    sessions.REMEMBER_THEFT: ("On {when} a copy of your \"keep me signed in\" cookie was used on another "
                              "device, so we signed you out everywhere. If you did not expect this, "
                              "change your password."),
    sessions.PASSWORD_RESET: ("Your password was reset with an email link on {when}, and every device "
                              "was signed out. If that was not you, reset it again now."),
    sessions.EMAIL_CHANGED: "Your account's email address was changed on {when}.",
    sessions.PHONE_CHANGED: ("Your phone number was changed on {when}; money cannot leave your wallet for "
                             "24 hours after it. If that was not you, change your password."),
}


def _tell_of_security_events(user: User) -> None:
    """Flash each security event of ``user`` not yet told (once each)."""
    from billvend.vending.lifecycle import LAGOS

    for kind, when in sessions.untold_events(user.id):
        notice = EVENT_NOTICES.get(kind)
        if notice:
            flash(notice.format(when=when.astimezone(LAGOS).strftime("%d %b %Y, %H:%M")), "warning")


def _sign_in(user: User, *, remember: bool, password: str):
    """Start a new session for ``user`` and pick where to go next; a browser
    that never signed in to this account gets the owner a security mail."""
    if not is_known_device(user.email):
        auth_messages.new_device_signin(user)
    sessions.start(user, remember=remember)
    login_user(user)
    _tell_of_security_events(user)
    if password_problem(password, user.email):
        # An account from before the password rules: it works, once more.
        session[sessions.MUST_CHANGE_PASSWORD_KEY] = True
        flash("Your password is easy to guess. Please choose a stronger one now.", "warning")
        target = url_for("account.password")
    else:
        target = safe_next(request.args.get("next"), url_for("main.index"))
    response = redirect(target, code=303)
    remember_device(response, user.email)
    return response


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = SignupForm()
    if form.validate_on_submit():
        email = form.email.data
        existing = db.session.scalar(sa.select(User).where(User.email == email))
        if existing is not None:
            # Its owner, who forgot they signed up, is simply logged in;
            # anyone else hears a neutral refusal (docs/security.md).
            if check_password_evenly(existing, form.password.data):
                return _sign_in(existing, remember=False, password=form.password.data)
            form.email.errors.append(ALREADY_NEUTRAL)
            auth_messages.signup_attempt(existing)  # its owner hears of it, the visitor does not
            # A wrong password for an existing account: it counts against
            # the account's failed-login limit, as on /login.
            g.setdefault(SIGNUP_WRONG_PASSWORD, True)
        else:
            template = User(email=email)
            template.set_password(form.password.data)  # hash once, outside any retry

            @transactions.unit_of_work
            def open_account() -> int:
                user = User(email=email, password_hash=template.password_hash,
                            full_name=form.full_name.data or None, phone=form.phone.data or None)
                db.session.add(user)
                ledger.open_wallet(user)
                db.session.flush()
                # The account works at once; the link proves the address (issue 24).
                auth_messages.email_verification(user)
                return user.id

            try:
                user_id = open_account()
            except sa.exc.IntegrityError:
                form.email.errors.append(ALREADY_NEUTRAL)
            else:
                user = db.session.get(User, user_id)
                sessions.start(user, remember=False)
                login_user(user)
                flash("Welcome to billvend! Fund your wallet to buy electricity.", "success")
                response = redirect(url_for("main.index"), code=303)
                remember_device(response, user.email)
                return response
    status = 422 if form.errors else 200
    return render_template("auth/signup.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(sa.select(User).where(User.email == form.email.data))
        # The same scrypt work whether or not the email has an account.
        if not check_password_evenly(user, form.password.data):
            form.password.errors.append("Wrong email or password.")
        else:
            return _sign_in(user, remember=bool(form.remember.data), password=form.password.data)
    status = 422 if form.errors else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    form = LogoutForm()
    if form.validate_on_submit():
        logout_user()
        sessions.end()
        flash("You have been logged out.", "info")
    return redirect(url_for("main.index"), code=303)
