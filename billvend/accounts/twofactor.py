"""Admins' second factor: TOTP (RFC 6238, pyotp) and one-time recovery codes.

Enrolment: :func:`new_secret` makes a secret, the page shows it as a QR code
(:func:`qr_svg`, segno) and as text; the first code the app shows confirms it
(:func:`enable`), which also issues :data:`RECOVERY_CODE_COUNT` recovery
codes, shown once and stored as SHA-256 hashes. :func:`verify` accepts a
current code (never the same time step twice) or an unused recovery code.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

import pyotp
import sqlalchemy as sa

from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.accounts.models import RecoveryCode, User
from billvend.platform.models import utcnow

ISSUER = "billvend"
RECOVERY_CODE_COUNT = 10
#: RFC 6238 section 5.2: accept one step of clock drift either way.
VALID_WINDOW = 1
_CODE_RE = re.compile(r"^[0-9]{6}$")
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i look-alikes


def new_secret() -> str:
    """A random base32 secret (160 bits, RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, email: str) -> str:
    """The ``otpauth://totp/...`` URI authenticator apps scan."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """``uri`` as an inline SVG QR code (no script, no style attribute)."""
    import segno

    return segno.make(uri, error="m").svg_inline(scale=5, dark="#000", light="#fff")


def _hash(code: str) -> str:
    return hashlib.sha256(_normalise_recovery(code).encode()).hexdigest()


def _normalise_recovery(code: str) -> str:
    return re.sub(r"[\s\-]", "", code or "").lower()


def _matching_step(secret: str, code: str, last_step: int | None) -> int | None:
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(time.time())
    for step in range(now_step - VALID_WINDOW, now_step + VALID_WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


@transactions.unit_of_work
def enable(user_id: int, secret: str, code: str) -> list[str] | None:
    """Confirm enrolment with a current ``code`` for ``secret``.

    :returns: the new recovery codes (plain text, shown once), or ``None``
        when the code is wrong (nothing changes).
    """
    user = db.session.get(User, user_id)
    code = re.sub(r"\s", "", code or "")
    if not _CODE_RE.fullmatch(code):
        return None
    step = _matching_step(secret, code, None)
    if step is None:
        return None
    user.totp_secret, user.totp_enabled_at, user.totp_last_step = secret, utcnow(), step
    db.session.execute(sa.delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:5]}-{raw[5:]}")
        db.session.add(RecoveryCode(user_id=user_id, code_hash=_hash(raw)))
    return codes


@transactions.unit_of_work
def verify(user_id: int, code: str) -> bool:
    """Check a TOTP code (each time step once) or spend a recovery code.

    :returns: True when accepted; the step or the recovery code is used up.
    """
    user = db.session.get(User, user_id)
    if user is None or not user.has_second_factor:
        return False
    compact = re.sub(r"\s", "", code or "")
    if _CODE_RE.fullmatch(compact):
        step = _matching_step(user.totp_secret, compact, user.totp_last_step)
        if step is None:
            return False
        # Conditional, so two requests racing with one code accept it once.
        return db.session.execute(
            sa.update(User).where(User.id == user_id, sa.or_(User.totp_last_step.is_(None),
                                                           User.totp_last_step < step))
            .values(totp_last_step=step)).rowcount == 1
    if len(_normalise_recovery(compact)) != 10:
        return False
    return db.session.execute(
        sa.update(RecoveryCode).where(RecoveryCode.user_id == user_id,
                                      RecoveryCode.code_hash == _hash(compact),
                                      RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())).rowcount == 1


def recovery_codes_left(user_id: int) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))) or 0
