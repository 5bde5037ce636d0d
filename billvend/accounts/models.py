"""Tables of accounts: users, server-side sessions, remember tokens, recovery codes,
the admin audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Optional
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

from billvend.platform.blocking import off_the_loop
from billvend.platform.extensions import db, login_manager
from billvend.platform.models import _in, utcnow, UTCDateTime


#: The customer's choices for payment messages (users.token_channels).
TOKEN_CHANNELS_BOTH = "both"
TOKEN_CHANNEL_CHOICES = (TOKEN_CHANNELS_BOTH, "sms", "email")


class User(UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint(_in("token_channels", TOKEN_CHANNEL_CHOICES), name="token_channels_known"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(254), unique=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(256))
    # Nullable: accounts made before signup asked for them are asked once.
    full_name: so.Mapped[Optional[str]] = so.mapped_column(sa.String(120))
    #: Nigerian mobile number the tokens are sent to, E.164 (``+2348031234567``,
    #: billvend.platform.phones).
    phone: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    #: A phone stored before 0015_phones that is no Nigerian mobile number,
    #: set aside as it was (``phone`` is then None) until the customer enters
    #: one again at the next visit; never guessed.
    phone_to_fix: so.Mapped[Optional[str]] = so.mapped_column(sa.String(40))
    #: When the owner proved ``phone`` is theirs with an SMS code
    #: (billvend.accounts.phone_verification); None until then, and again
    #: once the phone changes.
    phone_verified_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    #: ``phone`` again, set only while it is verified (NULL otherwise): the
    #: UNIQUE constraint makes a verified phone one account's alone, on
    #: SQLite and PostgreSQL alike (both allow many NULLs).
    verified_phone: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20), unique=True)
    #: Where payment messages (the token, a refund) go: "both", "sms" or
    #: "email" (the profile's choice; security mail ignores it).
    token_channels: so.Mapped[str] = so.mapped_column(
        sa.String(10), default=TOKEN_CHANNELS_BOTH, server_default=TOKEN_CHANNELS_BOTH)
    is_admin: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    #: Base32 TOTP secret (RFC 6238), set once the second factor is confirmed.
    totp_secret: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    totp_enabled_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    #: The last accepted TOTP time step: a code is never accepted twice.
    totp_last_step: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)
    #: When the owner followed a verification link sent to ``email``
    #: (billvend.accounts.links); None until then. The account works either way.
    email_verified_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())

    wallet: so.Mapped[Optional["Wallet"]] = so.relationship(back_populates="user")

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password`` (werkzeug's scrypt default)."""
        self.password_hash = off_the_loop(generate_password_hash, password)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches the stored hash."""
        return off_the_loop(check_password_hash, self.password_hash, password)

    @property
    def has_second_factor(self) -> bool:
        return self.totp_secret is not None and self.totp_enabled_at is not None

    def wants_token_by(self, channel: str) -> bool:
        """True when payment messages may go to this customer by ``channel``
        ("email" or "sms") under their ``token_channels`` choice."""
        return self.token_channels in (TOKEN_CHANNELS_BOTH, channel)

    def __repr__(self) -> str:
        return f"<User {self.email}>"


@login_manager.user_loader
def load_user(user_id: str) -> Optional[User]:
    return db.session.get(User, int(user_id))


class AdminAction(db.Model):
    """An admin's action on a payment, a funding or an adjustment: append-only audit log."""

    __tablename__ = "admin_actions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    admin_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    payment_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("payments.id"), index=True
    )
    #: Set for an admin action on a funding (issue 15).
    funding_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("fundings.id"), index=True
    )
    #: Set for a step of an admin adjustment or bonus (issue 27).
    adjustment_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("adjustments.id"), index=True
    )
    action: so.Mapped[str] = so.mapped_column(sa.String(40))
    reason: so.Mapped[str] = so.mapped_column(sa.String(500))
    result: so.Mapped[str] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    admin: so.Mapped[User] = so.relationship()
    payment: so.Mapped[Optional["Payment"]] = so.relationship()
    funding: so.Mapped[Optional["Funding"]] = so.relationship()
    adjustment: so.Mapped[Optional["Adjustment"]] = so.relationship()


class UserSession(db.Model):
    """One browser session (billvend.accounts.sessions): the cookie holds a random id,
    this row holds its SHA-256 and the session's data. Deleting the row ends
    the session wherever its cookie is replayed."""

    __tablename__ = "user_sessions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    id_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    #: The signed-in account; NULL for an anonymous visitor (CSRF token, flashes).
    user_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    data: so.Mapped[str] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    last_seen_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    #: Idle deadline, pushed forward as the session is used.
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)
    #: Hard deadline from the sign-in, never pushed forward.
    absolute_expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    ip_address: so.Mapped[Optional[str]] = so.mapped_column(sa.String(45))
    user_agent: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    #: The selector of the device's remember token this session belongs to
    #: (started with it, or restored from it): logging out on that device
    #: ends every session of the token, a copy's included.
    remember_selector: so.Mapped[Optional[str]] = so.mapped_column(sa.String(32), index=True)
    #: Password or code re-entries this session has used up (a right one is
    #: given back); counted here, with one UPDATE each, so requests sent in
    #: parallel cannot each see the same count (billvend.web.security.reentry).
    reauth_failures: so.Mapped[int] = so.mapped_column(sa.Integer, default=0, server_default="0")


class SecurityEvent(db.Model):
    """Something the account's owner should know happened to it: a session
    ended after too many wrong password or code re-entries
    (``reauth_locked``), a copied remember token noticed (``remember_theft``).
    ``notified_at`` is set once the owner has been told at a sign-in."""

    __tablename__ = "security_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    ip_address: so.Mapped[Optional[str]] = so.mapped_column(sa.String(45))
    user_agent: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    notified_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())


class RememberToken(db.Model):
    """"Keep me signed in" on one device: the cookie holds ``selector.validator``;
    this row holds the selector and the validator's SHA-256. Rotated each time
    it starts a session, deleted at logout and on password change."""

    __tablename__ = "remember_tokens"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    selector: so.Mapped[str] = so.mapped_column(sa.String(32), unique=True)
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    #: The validator before the last rotation, accepted for a few seconds so
    #: two requests racing on one old cookie do not sign the device out.
    previous_token_hash: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    rotated_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    user_agent: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))


#: What an account link (``account_links.purpose``) is for.
LINK_PASSWORD_RESET = "password_reset"
LINK_VERIFY_EMAIL = "verify_email"
LINK_PURPOSES = (LINK_PASSWORD_RESET, LINK_VERIFY_EMAIL)


class AccountLink(db.Model):
    """A single-use link mailed to the owner (billvend.accounts.links): a
    password reset, or the verification of an address. The URL carries a
    random token; this row holds only its SHA-256.

    ``new_email`` is the address a ``verify_email`` link proves (the current
    one, or the one the owner is changing to, which becomes the account's
    address only when the link is followed). ``password_digest`` binds a
    ``password_reset`` link to the password it replaces and the address it
    was mailed to: the SHA-256 of ``password_hash`` and ``email`` at issue,
    so any change of password or address kills it."""

    __tablename__ = "account_links"
    __table_args__ = (sa.CheckConstraint(_in("purpose", LINK_PURPOSES), name="purpose_known"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: so.Mapped[str] = so.mapped_column(sa.String(20))
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    new_email: so.Mapped[Optional[str]] = so.mapped_column(sa.String(254))
    password_digest: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    used_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())


class RecoveryCode(db.Model):
    """A one-time second-factor recovery code, stored as its SHA-256 (the
    codes are random, 50 bits, so a fast hash is enough)."""

    __tablename__ = "recovery_codes"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    used_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())


class PhoneCode(db.Model):
    """A 6-digit code sent by SMS to prove ``phone`` is the owner's
    (billvend.accounts.phone_verification). The row holds the code's
    HMAC-SHA256 under the app's SECRET_KEY (a plain hash of a 6-digit code is
    reversed by trying the million of them). ``attempts`` counts the tries,
    raised by one conditional UPDATE each so parallel guesses cannot pass
    :data:`~billvend.accounts.phone_verification.MAX_ATTEMPTS`; ``used_at``
    is set when the right code is typed. Only a user's newest code works."""

    __tablename__ = "phone_codes"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The E.164 phone the code was sent to; the code proves only that one.
    phone: so.Mapped[str] = so.mapped_column(sa.String(20))
    code_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    attempts: so.Mapped[int] = so.mapped_column(sa.Integer, default=0, server_default="0")
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    used_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
