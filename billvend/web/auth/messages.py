"""Security mail (issue 23): a sign-in from a new device, and "someone tried
to sign up with your address". Always sent by email, whatever the token
preferences say. Each is queued in a unit of work of its own at the moment
of the event (the sign-in, the refused signup); the outbox sends it after
that unit commits."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone

from flask import request

from billvend.accounts.models import User
from billvend.notifications.services import notify
from billvend.platform import transactions
from billvend.web.security import client_ip
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
