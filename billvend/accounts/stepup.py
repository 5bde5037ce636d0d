"""Step-up before money leaves a customer's wallet for the outside (issue 24;
withdrawals and transfers call it through
:func:`billvend.web.security.step_up_required`).

Two rules, both needed:

* the password was typed in this session within :data:`FRESH_SECONDS`
  (10 minutes: ``billvend.accounts.sessions.is_fresh``; sign-in and
  ``/account/confirm`` set it, a remember-me restore never does);
* no :data:`HOLD_KINDS` security event (a password reset, an email change, a
  phone change) for the account in the last :data:`HOLD_SECONDS` (24 h):
  whoever just took over an account by its mail or phone cannot empty it
  before the owner hears of it.

The 24 h run from the event's own time (``security_events.created_at``, the
moment the change was made), compared with the database clock, and from
the newest such event: a second change starts a new 24 h. Admin refunds and
credits are not money leaving a customer's wallet and do not use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa

from billvend.accounts import sessions
from billvend.platform.clock import db_now
from billvend.platform.extensions import db

FRESH_SECONDS = 10 * 60
HOLD_SECONDS = 24 * 3600
HOLD_KINDS = (sessions.PASSWORD_RESET, sessions.EMAIL_CHANGED, sessions.PHONE_CHANGED)


@dataclass(frozen=True)
class Hold:
    """Money may not leave until ``until``: the ``kind`` of change made at ``since``."""

    kind: str
    since: datetime
    until: datetime


def hold_of(user_id: int) -> Optional[Hold]:
    """The hold on ``user_id``'s money from the newest password reset, email
    change or phone change of the last 24 h (database clock), or None."""
    events = sessions.EVENTS
    since = db_now() - timedelta(seconds=HOLD_SECONDS)
    row = db.session.execute(sa.select(events.c.kind, events.c.created_at).where(
        events.c.user_id == user_id, events.c.kind.in_(HOLD_KINDS), events.c.created_at > since)
        .order_by(events.c.created_at.desc()).limit(1)).first()
    if row is None:
        return None
    return Hold(kind=row.kind, since=row.created_at, until=row.created_at + timedelta(seconds=HOLD_SECONDS))


def password_is_fresh() -> bool:
    """True when this session's password was typed within :data:`FRESH_SECONDS`."""
    return sessions.is_fresh(FRESH_SECONDS)
