"""Security mail (issue 23): a sign-in from a new device, and "someone tried
to sign up with your address"; (issue 24) the password reset link, a
verification link, the notice of a reset and of an address change. Always
sent by email, whatever the token preferences say. Each is queued in the
unit of work of its event (the sign-in, the refused signup, the link's
issue); the outbox sends it after that unit commits.

A link travels in the context key ``secret_link``: the outbox erases
``secret_`` values once the mail is sent, and /admin/messages never shows
them (billvend.notifications.models.SECRET_PREFIX)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import request

from billvend.accounts import links
from billvend.accounts.models import LINK_PASSWORD_RESET, LINK_VERIFY_EMAIL, User
from billvend.notifications.services import notify
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.web.security import client_ip, external_url
from billvend.web.useragents import device_name

#: Nigeria keeps West Africa Time all year (UTC+1).
LAGOS = timezone(timedelta(hours=1), "Africa/Lagos")


def _where_and_when() -> dict[str, str]:
    return {"device": device_name(request.user_agent.string), "ip": client_ip(),
            "when": datetime.now(LAGOS).strftime("%d %b %Y, %H:%M")}


@transactions.unit_of_work
def new_device_signin(user: User) -> None:
    """Queue "a new sign-in to your account" for ``user``, who just signed in
    from a browser that had not signed in to this account before."""
    notify(f"user:{user.id}:signin:{secrets.token_hex(8)}", "email", user.email, "new_signin",
           _where_and_when(), user_id=user.id)


@transactions.unit_of_work
def signup_attempt(user: User) -> None:
    """Queue "someone tried to sign up with your address" for ``user`` (a
    signup naming their address with another password). At most one a day,
    so the form cannot be used to flood an inbox."""
    day = datetime.now(LAGOS).strftime("%Y-%m-%d")
    notify(f"user:{user.id}:signup-attempt:{day}", "email", user.email, "signup_attempt",
           _where_and_when(), user_id=user.id)


@transactions.unit_of_work
def password_reset(email: str) -> bool:
    """Issue a reset link for the account of ``email`` (normalised) and
    queue it by mail, in one unit of work; nothing for an address with no
    account. :returns: whether an account has that address (for the log;
    the page never says)."""
    user = db.session.scalar(sa.select(User).where(User.email == email))
    if user is None:
        return False
    token, link_id = links.issue(user, LINK_PASSWORD_RESET)
    notify(f"user:{user.id}:password-reset:{link_id}", "email", user.email, "password_reset",
           {"secret_link": external_url("auth.reset_password", token=token),
            "minutes": links.PASSWORD_RESET_SECONDS // 60, **_where_and_when()}, user_id=user.id)
    return True


def password_was_reset(user: User) -> None:
    """Queue "your password was reset" for ``user`` in the caller's unit of
    work (the reset's), so an owner who did not ask hears of it."""
    notify(f"user:{user.id}:password-was-reset:{secrets.token_hex(8)}", "email", user.email,
           "password_was_reset", _where_and_when(), user_id=user.id)


def email_verification(user: User, new_email: str | None = None) -> None:
    """In the caller's unit of work: issue a verification link for
    ``new_email`` (default the account's address) and queue it to that
    address. Older verification links of ``user`` stop working."""
    address = new_email or user.email
    token, link_id = links.issue(user, LINK_VERIFY_EMAIL, new_email=address)
    notify(f"user:{user.id}:verify-email:{link_id}", "email", address, "verify_email",
           {"secret_link": external_url("auth.verify_email", token=token), "email": address,
            "change": address != user.email, "hours": links.VERIFY_EMAIL_SECONDS // 3600},
           user_id=user.id)


@transactions.unit_of_work
def resend_verification(user_id: int) -> str:
    """Send a new verification link for ``user_id``'s pending address, else
    their current one. :returns: the address it went to."""
    user = db.session.get(User, user_id)
    address = links.pending_email(user_id) or user.email
    email_verification(user, address)
    return address


@transactions.unit_of_work
def email_change(user_id: int, new_email: str) -> None:
    """The owner asked to use ``new_email``: a verification link to it, and
    a notice to the current address (which stays the account's until the
    link is followed)."""
    user = db.session.get(User, user_id)
    email_verification(user, new_email)
    notify(f"user:{user.id}:email-change:{secrets.token_hex(8)}", "email", user.email,
           "email_change_notice", {"new_email": new_email, **_where_and_when()}, user_id=user.id)
