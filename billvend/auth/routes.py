"""Sign up, log in and log out (Flask-Login, hashed passwords, CSRF)."""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user

from billvend import ledger
from billvend.auth import bp
from billvend.auth.forms import LoginForm, LogoutForm, SignupForm
from billvend.extensions import db
from billvend.models import User


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths may be a post-login destination."""
    if target and target.startswith("/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("main.index")


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = SignupForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if db.session.scalar(sa.select(User.id).where(User.email == email)) is not None:
            form.email.errors.append("An account with this email already exists. Log in instead.")
        else:
            user = User(email=email, full_name=form.full_name.data or None,
                        phone=form.phone.data or None)
            user.set_password(form.password.data)
            db.session.add(user)
            ledger.open_wallet(user)
            try:
                db.session.commit()
            except sa.exc.IntegrityError:
                db.session.rollback()
                form.email.errors.append("An account with this email already exists. Log in instead.")
            else:
                login_user(user)
                flash("Welcome to billvend! Fund your wallet to buy electricity.", "success")
                return redirect(url_for("main.index"), code=303)
    status = 422 if form.errors else 200
    return render_template("auth/signup.html", form=form), status


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        user = db.session.scalar(sa.select(User).where(User.email == email))
        if user is None or not user.check_password(form.password.data):
            form.password.errors.append("Wrong email or password.")
        else:
            login_user(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")), code=303)
    status = 422 if form.errors else 200
    return render_template("auth/login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    form = LogoutForm()
    if form.validate_on_submit():
        logout_user()
        flash("You have been logged out.", "info")
    return redirect(url_for("main.index"), code=303)
