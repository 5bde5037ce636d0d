"""Single-use links mailed to an account's owner (issue 24): a password
reset, and the verification of an email address (at signup, or the new one
when the address is changed).

A link's token is 256 random bits (``secrets.token_urlsafe(32)``, 43
characters); the row (:class:`~billvend.accounts.models.AccountLink`) keeps
only its SHA-256, so a copy of the database opens no account. A link works
once (a conditional UPDATE marks it used: two clicks racing cannot both
succeed) and until its expiry, on the database clock:

* ``password_reset``: :data:`PASSWORD_RESET_SECONDS` (30 minutes), bound to
  the password it replaces and the address it went to (the SHA-256 of
  ``users.password_hash`` and ``users.email`` at issue): any change of
  password (a reset through another link, a change on /account/password)
  or of address kills every older reset link.
* ``verify_email``: :data:`VERIFY_EMAIL_SECONDS` (24 hours) for the address
  in ``new_email``; issuing one kills the older ones of the user (only the
  newest mail works). Following it for the current address records
  ``users.email_verified_at``; for another address it makes that address the
  account's, refused when another account took it meanwhile; the switch
  kills the reset links mailed to the old address. Following a reset link
  verifies the address too (it came there). A password reset or change
  kills a pending address change (:func:`kill_email_changes`): it may be
  the old password's holder's.

Services here never commit: the caller's unit of work does.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa

from billvend.accounts.models import (
    LINK_PASSWORD_RESET, LINK_VERIFY_EMAIL, AccountLink, User,
)
from billvend.platform.clock import db_now
from billvend.platform.extensions import db

PASSWORD_RESET_SECONDS = 30 * 60
VERIFY_EMAIL_SECONDS = 24 * 3600
LIFETIME_SECONDS = {LINK_PASSWORD_RESET: PASSWORD_RESET_SECONDS, LINK_VERIFY_EMAIL: VERIFY_EMAIL_SECONDS}
#: How long a link's row outlives its expiry: a week in which following an
#: old mail still says "expired" or "used" rather than "invalid".
KEEP_AFTER_EXPIRY_SECONDS = 7 * 24 * 3600

#: What a token looks like (``secrets.token_urlsafe(32)``); anything else
#: (too long, non-ASCII, other characters) is refused before any lookup.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,64}")

# Why a link does not work (:class:`LinkProblem`).
INVALID = "invalid"    # malformed, tampered with, or never issued
EXPIRED = "expired"
USED = "used"          # already followed (or replaced by a newer one)
STALE = "stale"        # a reset link whose password was changed since
FOREIGN = "foreign"    # a link of another account than the signed-in one
TAKEN = "taken"        # the address to switch to has another account now


class LinkProblem(Exception):
    """The link cannot be used; ``reason`` is one of the constants above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    """What following a verification link did: ``email`` is the account's
    address now; ``changed_from`` the previous one when it switched."""

    user_id: int
    email: str
    changed_from: Optional[str]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def password_digest(password_hash: str, email: str) -> str:
    """What binds a reset link to a password and to the address it was
    mailed to: SHA-256 of the stored hash and the address. A link issued
    in the instant the address switched (after the switch killed the older
    ones) is stale by it."""
    return hashlib.sha256(f"{password_hash}\n{email}".encode()).hexdigest()


def issue(user: User, purpose: str, *, new_email: Optional[str] = None) -> tuple[str, int]:
    """Create a link of ``purpose`` for ``user`` in the caller's unit of work.

    :param new_email: for ``verify_email``, the address it proves (default
        the account's current one); ignored for a reset.
    :returns: ``(token, link id)``: the raw token goes into the mail only.
    """
    now = db_now()
    token = secrets.token_urlsafe(32)
    if purpose == LINK_VERIFY_EMAIL:
        # Only the newest verification mail works: an older one could
        # switch the account to an address the owner changed their mind on.
        db.session.execute(sa.update(AccountLink).where(
            AccountLink.user_id == user.id, AccountLink.purpose == LINK_VERIFY_EMAIL,
            AccountLink.used_at.is_(None)).values(used_at=now)
            .execution_options(synchronize_session=False))
    link = AccountLink(
        user_id=user.id, purpose=purpose, token_hash=token_hash(token), created_at=now,
        expires_at=now + timedelta(seconds=LIFETIME_SECONDS[purpose]),
        new_email=(new_email or user.email) if purpose == LINK_VERIFY_EMAIL else None,
        password_digest=password_digest(user.password_hash, user.email) if purpose == LINK_PASSWORD_RESET else None)
    db.session.add(link)
    db.session.flush()
    return token, link.id


def find(token: str, purpose: str) -> tuple[AccountLink, User]:
    """The usable link ``token`` names, and its user (nothing changed).

    :raises LinkProblem: ``invalid`` (malformed, unknown, another purpose),
        ``used``, ``expired`` or ``stale`` (a reset link whose password has
        changed since).
    """
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise LinkProblem(INVALID)
    link = db.session.scalar(sa.select(AccountLink).where(AccountLink.token_hash == token_hash(token)))
    if link is None or link.purpose != purpose:
        raise LinkProblem(INVALID)
    user = db.session.get(User, link.user_id)
    if user is None:
        raise LinkProblem(INVALID)
    if link.used_at is not None:
        raise LinkProblem(USED)
    if link.expires_at <= db_now():
        raise LinkProblem(EXPIRED)
    if purpose == LINK_PASSWORD_RESET and link.password_digest != password_digest(
            user.password_hash, user.email):
        raise LinkProblem(STALE)
    return link, user


def _use(link: AccountLink) -> None:
    """Mark ``link`` used, exactly once across racing requests.

    :raises LinkProblem: ``used`` when another request used it first.
    """
    taken = db.session.execute(sa.update(AccountLink).where(
        AccountLink.id == link.id, AccountLink.used_at.is_(None)).values(used_at=db_now())
        .execution_options(synchronize_session=False)).rowcount
    if taken != 1:
        raise LinkProblem(USED)


def reset_password(token: str, new_password_hash: str) -> User:
    """Follow a reset link: store ``new_password_hash`` (already hashed, by
    ``User.set_password``, outside the unit), record the address as verified
    if it was not (the link came there) and mark every reset link of the
    user used. Ending the sessions and recording the event is the caller's
    (same unit of work).

    :raises LinkProblem: as :func:`find`.
    """
    link, user = find(token, LINK_PASSWORD_RESET)
    _use(link)
    # The link came to the account's address: following it proves that too.
    db.session.execute(sa.update(User).where(User.id == user.id).values(
        password_hash=new_password_hash, email_verified_at=sa.func.coalesce(User.email_verified_at, db_now()))
        .execution_options(synchronize_session=False))
    kill_password_resets(user.id)
    kill_email_changes(user.id)
    db.session.refresh(user)
    return user


def kill_password_resets(user_id: int) -> int:
    """Mark every unused reset link of ``user_id`` used (a password change:
    they are stale by their digest already; this makes it visible).
    :returns: how many."""
    return db.session.execute(sa.update(AccountLink).where(
        AccountLink.user_id == user_id, AccountLink.purpose == LINK_PASSWORD_RESET,
        AccountLink.used_at.is_(None)).values(used_at=db_now())
        .execution_options(synchronize_session=False)).rowcount


def kill_email_changes(user_id: int) -> int:
    """Mark used every unused verification link of ``user_id`` for another
    address than the account's (a pending address change), on a password
    reset or change: whoever had the old password may have asked it, and
    switching the account to their address would give them the next reset
    link. :returns: how many."""
    current = sa.select(User.email).where(User.id == user_id).scalar_subquery()
    return db.session.execute(sa.update(AccountLink).where(
        AccountLink.user_id == user_id, AccountLink.purpose == LINK_VERIFY_EMAIL,
        AccountLink.used_at.is_(None), AccountLink.new_email != current).values(used_at=db_now())
        .execution_options(synchronize_session=False)).rowcount


def verify_email(token: str, signed_in_user_id: Optional[int] = None) -> Verified:
    """Follow a verification link: the address in it is verified now, and
    becomes the account's address if it is not yet.

    :param signed_in_user_id: who is signed in in this browser, if anyone: a
        link of another account is refused (``foreign``) and changes nothing.
    :raises LinkProblem: as :func:`find`, ``foreign``, or ``taken`` (another
        account has the address now; users.email is UNIQUE, addresses are
        stored normalised, so equal spellings collide).
    """
    link, user = find(token, LINK_VERIFY_EMAIL)
    if signed_in_user_id is not None and signed_in_user_id != user.id:
        raise LinkProblem(FOREIGN)
    address, before = link.new_email or user.email, user.email
    if address != user.email and db.session.scalar(
            sa.select(sa.func.count()).select_from(User).where(User.email == address, User.id != user.id)):
        raise LinkProblem(TAKEN)
    _use(link)
    db.session.execute(sa.update(User).where(User.id == user.id)
                       .values(email=address, email_verified_at=db_now())
                       .execution_options(synchronize_session=False))
    if address != before:
        # A reset link mailed to the old address must not open the account
        # it no longer names.
        kill_password_resets(user.id)
    db.session.flush()
    return Verified(user_id=user.id, email=address, changed_from=before if address != before else None)


def pending_email(user_id: int) -> Optional[str]:
    """The address ``user_id`` is changing to (a live verification link for
    another address than the account's), or None."""
    user = db.session.get(User, user_id)
    row = db.session.scalar(sa.select(AccountLink.new_email).where(
        AccountLink.user_id == user_id, AccountLink.purpose == LINK_VERIFY_EMAIL,
        AccountLink.used_at.is_(None), AccountLink.expires_at > db_now(),
        AccountLink.new_email != user.email).order_by(AccountLink.id.desc()).limit(1))
    return row


def delete_expired(conn, now: datetime) -> int:
    """Delete links that expired more than :data:`KEEP_AFTER_EXPIRY_SECONDS`
    before ``now`` (used or not: none of them can work again, and the
    security events keep the history). Returns the number deleted."""
    cutoff = now - timedelta(seconds=KEEP_AFTER_EXPIRY_SECONDS)
    return conn.execute(sa.delete(AccountLink.__table__).where(
        AccountLink.__table__.c.expires_at <= cutoff)).rowcount
