"""Phone verification by SMS code (issue 24), and the one way the account's
phone changes.

* :func:`issue_code` makes a 6-digit code (``secrets``) for the account's
  phone, stored as its HMAC-SHA256 under the app's ``SECRET_KEY``: a plain
  hash of a 6-digit code is reversed by hashing the million of them, the
  HMAC needs the key too. It lives :data:`CODE_SECONDS` (10 minutes, on the
  database clock). The caller queues the SMS in the same unit of work
  (``billvend.web.account.phone``), so a code row never exists without its
  message, nor a message without its row.
* :func:`check_code` takes one try of the user's newest code: the try is
  counted first, by one conditional UPDATE (``attempts < MAX_ATTEMPTS``), so
  guesses sent in parallel cannot get more than :data:`MAX_ATTEMPTS` between
  them; after the fifth wrong one even the right code fails. The right code
  marks the row used (once: a second UPDATE on ``used_at IS NULL``) and
  records ``users.phone_verified_at`` and ``users.verified_phone``.
* ``users.verified_phone`` is UNIQUE: a phone is verified on one account
  only. Both steps look first, to say so clearly; two accounts verifying one
  number at the same instant are settled by the constraint (the second
  unit's ``IntegrityError``, which the caller turns into the same words).
* :func:`change_phone` is the only writer of ``users.phone`` for a signed-in
  customer: a new phone is unverified, and changing or removing one records
  a ``phone_changed`` security event (it holds money back 24 h:
  ``billvend.accounts.stepup``).

Services here never commit: the caller's unit of work does.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa
from flask import current_app

from billvend.accounts import sessions
from billvend.accounts.models import PhoneCode, User
from billvend.platform.clock import db_now
from billvend.platform.extensions import db

CODE_SECONDS = 10 * 60
#: How long a code's row outlives its expiry before the periodic purge.
KEEP_AFTER_EXPIRY_SECONDS = 24 * 3600
MAX_ATTEMPTS = 5
CODE_DIGITS = 6

CODES = PhoneCode.__table__
USERS = User.__table__

# Why a code was not sent or not accepted (PhoneCodeProblem.reason, CheckResult.problem).
NO_PHONE = "no_phone"                # the account has no mobile number
ALREADY_VERIFIED = "already_verified"
TAKEN = "taken"                      # verified on another account
NO_CODE = "no_code"                  # none was ever sent
EXPIRED = "expired"
USED = "used"
EXHAUSTED = "exhausted"              # MAX_ATTEMPTS wrong tries
WRONG = "wrong"
OTHER_PHONE = "other_phone"          # sent to a phone the account no longer has


class PhoneCodeProblem(Exception):
    """No code can be sent; ``reason`` is one of the constants above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedCode:
    """A code just made: the raw ``code`` exists only here and in its SMS."""

    code_id: int
    user_id: int
    phone: str
    code: str
    expires_at: datetime


@dataclass(frozen=True)
class CheckResult:
    """One try: ``verified``, or the ``problem`` (a constant above) with the
    ``tries_left`` on that code."""

    verified: bool
    problem: Optional[str] = None
    tries_left: int = 0


def code_hash(code: str) -> str:
    """The stored form of ``code``: HMAC-SHA256 under ``SECRET_KEY``, hex."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"billvend.phone-code:{code}".encode(), hashlib.sha256).hexdigest()


def verified_elsewhere(user_id: int, phone: str) -> bool:
    """True when ``phone`` is verified on an account other than ``user_id``."""
    return db.session.scalar(sa.select(USERS.c.id).where(
        USERS.c.verified_phone == phone, USERS.c.id != user_id).limit(1)) is not None


def _phone_state(user_id: int):
    return db.session.execute(sa.select(USERS.c.phone, USERS.c.verified_phone).where(
        USERS.c.id == user_id)).one()


def issue_code(user_id: int) -> IssuedCode:
    """Make a new code for ``user_id``'s phone (the older ones stop working:
    only the newest is checked), in the caller's unit of work.

    :raises PhoneCodeProblem: ``no_phone``, ``already_verified``, or ``taken``
        (verified on another account: no SMS is sent for it).
    """
    user = _phone_state(user_id)
    if not user.phone:
        raise PhoneCodeProblem(NO_PHONE)
    if user.verified_phone == user.phone:
        raise PhoneCodeProblem(ALREADY_VERIFIED)
    if verified_elsewhere(user_id, user.phone):
        raise PhoneCodeProblem(TAKEN)
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    now = db_now()
    expires_at = now + timedelta(seconds=CODE_SECONDS)
    code_id = db.session.execute(sa.insert(CODES).values(
        user_id=user_id, phone=user.phone, code_hash=code_hash(code), attempts=0,
        created_at=now, expires_at=expires_at).returning(CODES.c.id)).scalar_one()
    return IssuedCode(code_id=code_id, user_id=user_id, phone=user.phone, code=code, expires_at=expires_at)


def newest_code(user_id: int):
    """The user's newest code row (columns of ``phone_codes``), or None."""
    return db.session.execute(sa.select(CODES).where(CODES.c.user_id == user_id)
                              .order_by(CODES.c.id.desc()).limit(1)).first()


def _why_not(code_id: int) -> str:
    """Why the code ``code_id`` took no try: used, out of tries, or expired."""
    row = db.session.execute(sa.select(CODES).where(CODES.c.id == code_id)).one()
    if row.used_at is not None:
        return USED
    if row.attempts >= MAX_ATTEMPTS:
        return EXHAUSTED
    return EXPIRED


def _take_try(code_id: int, now: datetime) -> bool:
    """Count one try of ``code_id`` if it still has one: one conditional
    UPDATE, so parallel tries are counted one by one (the row lock on
    PostgreSQL, the one writer on SQLite)."""
    return db.session.execute(sa.update(CODES).where(
        CODES.c.id == code_id, CODES.c.used_at.is_(None), CODES.c.attempts < MAX_ATTEMPTS,
        CODES.c.expires_at > now).values(attempts=CODES.c.attempts + 1)).rowcount == 1


def _wrong(code_id: int) -> CheckResult:
    attempts = db.session.scalar(sa.select(CODES.c.attempts).where(CODES.c.id == code_id))
    return CheckResult(False, WRONG, max(0, MAX_ATTEMPTS - int(attempts)))


def check_code(user_id: int, code: str) -> CheckResult:
    """One try of ``code`` (6 digits, validated by the form) against
    ``user_id``'s newest code, in the caller's unit of work: a wrong try is
    counted when that unit commits.

    :returns: the result; nothing but the try's count changes unless it is
        ``verified``.
    :raises sqlalchemy.exc.IntegrityError: another account verified the
        same phone in the same instant (``users.verified_phone`` UNIQUE);
        the unit rolls back, so the try and the code are left as they were.
    """
    row = newest_code(user_id)
    if row is None:
        return CheckResult(False, NO_CODE)
    user = _phone_state(user_id)
    if row.phone != user.phone:
        return CheckResult(False, OTHER_PHONE)
    if row.used_at is None and verified_elsewhere(user_id, row.phone):
        return CheckResult(False, TAKEN)
    now = db_now()
    if not _take_try(row.id, now):
        return CheckResult(False, _why_not(row.id))
    if not hmac.compare_digest(row.code_hash, code_hash(code)):
        return _wrong(row.id)
    if db.session.execute(sa.update(CODES).where(CODES.c.id == row.id, CODES.c.used_at.is_(None))
                          .values(used_at=now)).rowcount != 1:
        return CheckResult(False, USED)
    verified = db.session.execute(sa.update(USERS).where(USERS.c.id == user_id, USERS.c.phone == row.phone)
                                  .values(phone_verified_at=now, verified_phone=row.phone)).rowcount
    if verified != 1:  # the phone changed since the code was read
        return CheckResult(False, OTHER_PHONE)
    return CheckResult(True)


def change_phone(user_id: int, phone: Optional[str]) -> bool:
    """Set ``user_id``'s phone to ``phone`` (E.164, or None to remove it), in
    the caller's unit of work, from a request (the event records its address).
    A new phone starts unverified; replacing or removing one records a
    ``phone_changed`` security event. Giving a phone to an account that had
    none is no change of where its codes go, so it records none.

    :returns: False when ``phone`` is the phone it already has.
    """
    old = _phone_state(user_id).phone
    if phone == old:
        return False
    values = {"phone": phone, "phone_verified_at": None, "verified_phone": None}
    if phone:
        values["phone_to_fix"] = None
    db.session.execute(sa.update(USERS).where(USERS.c.id == user_id).values(**values))
    if old is not None:
        sessions.record_event(db.session, user_id, sessions.PHONE_CHANGED)
    return True


def is_verified(user: User) -> bool:
    """True when ``user``'s current phone is the one they verified."""
    return bool(user.phone) and user.verified_phone == user.phone and user.phone_verified_at is not None


def delete_expired(conn, now: datetime) -> int:
    """Delete codes that expired more than :data:`KEEP_AFTER_EXPIRY_SECONDS`
    before ``now``: only the newest unexpired code can be checked, so none
    of them is read again. Returns the number deleted."""
    cutoff = now - timedelta(seconds=KEEP_AFTER_EXPIRY_SECONDS)
    return conn.execute(sa.delete(CODES).where(CODES.c.expires_at <= cutoff)).rowcount
