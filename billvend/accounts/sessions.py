"""Server-side, revocable sessions and per-device "keep me signed in".

The ``session`` cookie holds only a random id (256 bits); the session's data
(Flask-Login's user id, the CSRF token, flashes, freshness and second-factor
marks) lives in a ``user_sessions`` row keyed by the id's SHA-256, so a
stolen database does not yield usable cookies. Deleting the row ends the
session: a replayed cookie then opens an empty, anonymous session.

* Sign-in (:func:`start`) always moves to a new id (no fixation) with empty
  data (so a new CSRF token); logout (:func:`end`) deletes the row and this
  device's remember token; :func:`end_other_sessions` ends every other session
  of a user (password change, "log out everywhere").
* Lifetimes: admins ``ADMIN_SESSION_IDLE_SECONDS`` idle and
  ``ADMIN_SESSION_ABSOLUTE_SECONDS`` absolute; customers a browser-session
  cookie, forgotten by the server after ``CUSTOMER_SESSION_IDLE_SECONDS`` idle
  or ``CUSTOMER_SESSION_ABSOLUTE_SECONDS``; anonymous visitors
  ``ANONYMOUS_SESSION_SECONDS``.
* "Keep me signed in" is a ``remember`` cookie ``selector.validator``
  (OWASP's split-token pattern): the row holds the selector and the
  validator's SHA-256; when it starts a new session the validator is rotated.
  It lasts ``REMEMBER_ME_SECONDS`` from sign-in and never makes a session
  fresh. The rotated validator is ``HMAC(SECRET_KEY, selector.validator)``,
  so a browser whose answer was lost and that sends the old one again within
  ``ROTATION_GRACE_SECONDS`` is handed the same new one. The old validator
  presented after the grace means the cookie was copied (one of the two
  holders already rotated it): every session and remember token of the user
  ends, and the owner is told at the next sign-in (OWASP's token-theft
  detection). Logging out ends every session started from this device's
  token, a copy's included.

Storage goes through the request's own database session (one pooled
connection per request, not two), each write as its own unit of work
(``billvend.platform.transactions``): reading the session before the view, saving it
after the view's units have committed. A view that left writes uncommitted
(a bug) gets its session unsaved and logged, never its writes committed by
the session store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import secrets
import time
from datetime import datetime, timedelta
from typing import Any, Optional

import sqlalchemy as sa
from flask import Flask, current_app, g, has_app_context, request, session
from flask.sessions import SessionInterface, SessionMixin, session_json_serializer
from sqlalchemy.orm import joinedload
from werkzeug.datastructures import CallbackDict

from billvend.platform import transactions
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.accounts.models import RememberToken, SecurityEvent, User, UserSession
from billvend.platform.models import utcnow

log = logging.getLogger(__name__)

SESSIONS = UserSession.__table__
REMEMBER = RememberToken.__table__
USERS = User.__table__
EVENTS = SecurityEvent.__table__

#: Security events (``security_events.kind``); the owner is told of each at
#: their next sign-in (:func:`untold_events`).
REAUTH_LOCKED = "reauth_locked"
REMEMBER_THEFT = "remember_theft"
#: The account's phone was changed or removed (the profile); it also holds
#: money back for 24 h (billvend.accounts.stepup), as do the two below.
PHONE_CHANGED = "phone_changed"
#: Issue 24: a password reset by email link, an email address changed (a
#: verified new address). The step-up before money leaves reads these kinds
#: (with ``phone_changed``) within the last 24 h: keep the strings.
PASSWORD_RESET = "password_reset"
EMAIL_CHANGED = "email_changed"

#: How often an unchanged session's idle deadline is pushed forward (one
#: write per minute of activity, not one per request).
TOUCH_INTERVAL_SECONDS = 60
#: How long the validator before a rotation still works (two requests racing
#: on one old cookie, e.g. a restored tab loading its page and a poll).
ROTATION_GRACE_SECONDS = 30
#: One save in this many also deletes expired sessions and remember tokens.
CLEANUP_ONE_IN = 50

# Keys in the session data.
USER_ID_KEY = "_user_id"  # Flask-Login's
ADMIN_KEY = "_admin"
FRESH_AT_KEY = "_fresh_at"
SECOND_FACTOR_KEY = "_second_factor_at"
REMEMBER_SELECTOR_KEY = "_remember_selector"
MUST_CHANGE_PASSWORD_KEY = "_must_change_password"
REAUTH_FAILURES_KEY = "_reauth_failures"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _new_id() -> str:
    return secrets.token_urlsafe(32)


class ServerSession(CallbackDict, SessionMixin):
    """A session whose data is stored server-side under :attr:`sid`."""

    def __init__(self, initial: Optional[dict] = None, sid: Optional[str] = None,
                 absolute_expires_at: Optional[datetime] = None,
                 last_seen_at: Optional[datetime] = None) -> None:
        def on_update(self):
            self.modified = True
            self.accessed = True

        super().__init__(initial or {}, on_update)
        self.sid = sid
        self.new = sid is None
        self.modified = False
        self.accessed = False
        self.absolute_expires_at = absolute_expires_at
        self.last_seen_at = last_seen_at
        #: Ids whose rows this response must delete (the id before a rotation).
        self.ended_ids: list[str] = []
        #: New ``remember`` cookie value; ``""`` deletes the cookie.
        self.remember_cookie: Optional[str] = None
        #: Set when the store could not be read: never write this session.
        self.unavailable = False
        self.error: Optional[BaseException] = None
        #: The user loaded with the session's row (:func:`_lookup`), or None.
        self.loaded_user: Optional[User] = None

    def rotate(self) -> None:
        """Forget the current id (its row is deleted at save) and the data;
        the next save stores the session under a new id."""
        if self.sid is not None:
            self.ended_ids.append(self.sid)
        self.sid = None
        self.new = True
        self.absolute_expires_at = None
        self.loaded_user = None
        self.clear()
        self.modified = True
        # Flask-WTF caches this request's signed CSRF token in g; it was
        # derived from the old session's secret, which is gone.
        if has_app_context():
            g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


def _seed_csrf(sess: ServerSession, config) -> None:
    """Give a new signed-in session its CSRF secret at once (the secret
    Flask-WTF signs into form tokens), so that a browser's first requests on
    it, made in parallel, do not each invent one and overwrite each other."""
    sess[config.get("WTF_CSRF_FIELD_NAME", "csrf_token")] = secrets.token_hex(20)


def lifetimes(config, data: dict) -> tuple[int, int]:
    """``(idle seconds, absolute seconds)`` for a session with ``data``."""
    if USER_ID_KEY not in data:
        seconds = config["ANONYMOUS_SESSION_SECONDS"]
        return seconds, seconds
    if data.get(ADMIN_KEY):
        return config["ADMIN_SESSION_IDLE_SECONDS"], config["ADMIN_SESSION_ABSOLUTE_SECONDS"]
    return config["CUSTOMER_SESSION_IDLE_SECONDS"], config["CUSTOMER_SESSION_ABSOLUTE_SECONDS"]


class ServerSessionInterface(SessionInterface):
    """Flask session interface over the ``user_sessions`` table."""

    serializer = session_json_serializer

    def open_session(self, app: Flask, request) -> Optional[ServerSession]:
        if app.static_url_path and request.path.startswith(app.static_url_path + "/"):
            return None  # Flask falls back to a null session: static files need none
        now = utcnow()
        sid = request.cookies.get(self.get_cookie_name(app)) or ""
        try:
            row = None
            if 20 <= len(sid) <= 100:
                row = _lookup(sid)
                if row is not None and row.expires_at > now and row.absolute_expires_at > now:
                    live = ServerSession(self.serializer.loads(row.data), sid=sid,
                                         absolute_expires_at=row.absolute_expires_at,
                                         last_seen_at=row.last_seen_at)
                    # The ORM's identity map holds objects weakly: this keeps
                    # the user loaded with the row there for the request.
                    live.loaded_user = row.User
                    return live
            fresh = ServerSession()
            if row is not None:
                fresh.ended_ids.append(sid)  # expired: its row goes at save
            remember = request.cookies.get(app.config["REMEMBER_COOKIE_NAME"])
            if remember:
                transactions.run(_restore_from_remember, app, fresh, remember, now)
            return fresh
        except (sa.exc.OperationalError, transactions.TransactionRuleError) as error:
            # The database is down: the request goes on anonymous and its
            # page (usually the 503) is served; nothing is written.
            log.error("session store unavailable: %s", error)
            db.session.rollback()
            broken = ServerSession()
            broken.unavailable = True
            broken.error = error  # raised by security's first before_request: the 503 page
            return broken

    def save_session(self, app: Flask, sess: ServerSession, response) -> None:
        if sess.unavailable:
            return
        name = self.get_cookie_name(app)
        cookie = dict(domain=self.get_cookie_domain(app), path=self.get_cookie_path(app),
                      secure=self.get_cookie_secure(app), httponly=True,
                      samesite=self.get_cookie_samesite(app))
        if sess.accessed:
            response.vary.add("Cookie")
        if _nothing_to_write(sess):
            # The common request: a live session, unchanged, touched within
            # the minute. No unit of work (its COMMIT is a round trip); the
            # read-only transaction ends with the request's database session.
            if transactions.has_uncommitted_writes():
                log.error("session not saved: the view left writes uncommitted (never committed here)")
        else:
            try:
                transactions.run(self._write, app, db.session, sess, response, name, cookie)
            except (sa.exc.OperationalError, transactions.TransactionRuleError) as error:
                log.error("session not saved: %s", error)
        if sess.remember_cookie == "":
            response.delete_cookie(app.config["REMEMBER_COOKIE_NAME"], **cookie)
        elif sess.remember_cookie:
            response.set_cookie(app.config["REMEMBER_COOKIE_NAME"], sess.remember_cookie,
                                max_age=app.config["REMEMBER_ME_SECONDS"], **cookie)

    def _write(self, app, conn, sess: ServerSession, response, name: str, cookie: dict) -> None:
        now = utcnow()
        if sess.ended_ids:
            conn.execute(sa.delete(SESSIONS).where(
                SESSIONS.c.id_hash.in_([_hash(sid) for sid in sess.ended_ids])))
        data = dict(sess)
        if not data:
            if sess.sid is not None:
                conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.id_hash == _hash(sess.sid)))
            if request.cookies.get(name):
                response.delete_cookie(name, domain=cookie["domain"], path=cookie["path"])
            return
        idle, absolute = lifetimes(app.config, data)
        user_id = int(data[USER_ID_KEY]) if USER_ID_KEY in data else None
        if sess.sid is None:
            if user_id is not None and not _token_still_held(conn, data.get(REMEMBER_SELECTOR_KEY)):
                # Its remember token was deleted (a reset) since this request
                # read it: the session would outlive that reset.
                sess.remember_cookie = ""
                return
            sess.sid = _new_id()
            sess.absolute_expires_at = now + timedelta(seconds=absolute)
            conn.execute(sa.insert(SESSIONS).values(
                id_hash=_hash(sess.sid), user_id=user_id, data=self.serializer.dumps(data),
                created_at=now, last_seen_at=now, expires_at=min(now + timedelta(seconds=idle),
                                                                 sess.absolute_expires_at),
                absolute_expires_at=sess.absolute_expires_at,
                ip_address=(request.remote_addr or "")[:45] or None,
                user_agent=(request.user_agent.string or "")[:200] or None,
                remember_selector=data.get(REMEMBER_SELECTOR_KEY)))
            # A browser-session cookie: the server's deadlines bound it.
            response.set_cookie(name, sess.sid, **cookie)
            if random.randrange(CLEANUP_ONE_IN) == 0:
                delete_expired(conn, now)
            return
        due = (sess.last_seen_at is None
               or (now - sess.last_seen_at).total_seconds() >= TOUCH_INTERVAL_SECONDS)
        if sess.modified or due:
            values: dict[str, Any] = {"last_seen_at": now, "user_id": user_id,
                                      "expires_at": min(now + timedelta(seconds=idle),
                                                        sess.absolute_expires_at)}
            if sess.modified:
                values["data"] = self.serializer.dumps(data)
                values["remember_selector"] = data.get(REMEMBER_SELECTOR_KEY)
            conn.execute(sa.update(SESSIONS).where(SESSIONS.c.id_hash == _hash(sess.sid)).values(**values))


def _token_still_held(conn, selector: Optional[str]) -> bool:
    """True when the session has no remember token, or it still exists; it
    is locked (shared) until the session row commits, and
    :func:`end_everything` deletes tokens before sessions, so a reset either
    sees the new session row or its token is gone before it is written."""
    if not selector:
        return True
    return conn.execute(sa.select(REMEMBER.c.id).where(REMEMBER.c.selector == selector)
                        .with_for_update(read=True)).first() is not None
def _lookup(sid: str):
    """The session row of cookie value ``sid`` (or None), with its user and
    the user's wallet loaded into the ORM session in the same statement, so
    that Flask-Login's user loader (``db.session.get``) and
    ``current_user.wallet`` cost no further round trip."""
    return db.session.execute(
        sa.select(SESSIONS, User).outerjoin(User, User.id == SESSIONS.c.user_id)
        .options(joinedload(User.wallet))
        .where(SESSIONS.c.id_hash == _hash(sid))).first()


def _nothing_to_write(sess: ServerSession) -> bool:
    """True when saving ``sess`` would write nothing: it has a row, its data
    is unchanged and non-empty, no id ended, and its idle deadline was
    pushed forward less than :data:`TOUCH_INTERVAL_SECONDS` ago."""
    if sess.sid is None or sess.modified or sess.ended_ids or not dict(sess) or sess.last_seen_at is None:
        return False
    return (utcnow() - sess.last_seen_at).total_seconds() < TOUCH_INTERVAL_SECONDS


def delete_expired(conn, now: datetime) -> None:
    """Delete sessions past a deadline and remember tokens past expiry."""
    conn.execute(sa.delete(SESSIONS).where(
        sa.or_(SESSIONS.c.expires_at <= now, SESSIONS.c.absolute_expires_at <= now)))
    conn.execute(sa.delete(REMEMBER).where(REMEMBER.c.expires_at <= now))


def _next_validator(selector: str, validator: str) -> str:
    """The validator ``selector.validator`` is rotated to. Derived, not
    random, so a repeat of the old one inside the grace gets the same new
    one; it needs the SECRET_KEY, so neither a stolen database (which holds
    hashes) nor a copied old cookie yields it."""
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(),
                      f"billvend.remember:{selector}.{validator}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def record_event(conn, user_id: int, kind: str) -> None:
    """Add a :class:`~billvend.accounts.models.SecurityEvent` of ``kind`` for
    ``user_id`` from this request (address, browser); the caller's unit of
    work commits it. Its time is the database clock's: the step-up's 24 h
    hold (billvend.accounts.stepup) compares it with that clock, so a web
    host whose clock lags cannot shorten the hold."""
    conn.execute(sa.insert(EVENTS).values(
        user_id=user_id, kind=kind, created_at=db_now(None if conn is db.session else conn),
        ip_address=(request.remote_addr or "")[:45] or None,
        user_agent=(request.user_agent.string or "")[:200] or None))


def end_everything(conn, user_id: int) -> int:
    """Delete every session and remember token of ``user_id`` (inside the
    caller's unit of work). :returns: how many sessions ended."""
    # Tokens first: a session being saved from one holds it (shared) until
    # it commits, so the DELETE of sessions below then sees that session.
    conn.execute(sa.delete(REMEMBER).where(REMEMBER.c.user_id == user_id))
    return conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.user_id == user_id)).rowcount


def _restore_from_remember(app: Flask, sess: ServerSession, cookie: str, now: datetime) -> None:
    """Turn a valid ``remember`` cookie into a new (not fresh) signed-in
    session, rotating its validator; a bad one is deleted from the browser;
    the validator rotated away, after its grace, is a copied cookie: every
    session and token of the user ends (an event tells the owner).
    (Run as a unit of work.)"""
    conn = db.session
    selector, _, validator = cookie.partition(".")
    row = None
    if selector and validator and len(selector) <= 32 and len(validator) <= 100:
        row = conn.execute(sa.select(REMEMBER).where(REMEMBER.c.selector == selector)).first()
    given = _hash(validator)
    if row is None or row.expires_at <= now:
        sess.remember_cookie = ""
        return
    current = hmac.compare_digest(given, row.token_hash)
    rotated_away = (row.previous_token_hash is not None
                    and hmac.compare_digest(given, row.previous_token_hash))
    in_grace = (rotated_away and row.rotated_at is not None
                and (now - row.rotated_at).total_seconds() < ROTATION_GRACE_SECONDS)
    if rotated_away and not in_grace:
        # Exactly the validator that was rotated away, after the grace: the
        # browser that rotated it and this one hold copies of one cookie.
        # Which is the owner's is unknowable, so both are signed out.
        ended = end_everything(conn, row.user_id)
        record_event(conn, row.user_id, REMEMBER_THEFT)
        log.warning("remember token %s of user %s presented again after its rotation: copied; "
                    "%d sessions and every remember token ended", selector, row.user_id, ended)
        sess.remember_cookie = ""
        return
    if not (current or in_grace):
        # Not a validator this token ever had (a guess, or one rotated more
        # than once ago): refused, and no one is signed out for it.
        log.warning("remember token %s: wrong validator; refused", selector)
        sess.remember_cookie = ""
        return
    user = conn.execute(sa.select(USERS.c.id, USERS.c.is_admin).where(USERS.c.id == row.user_id)).first()
    if user is None:
        sess.remember_cookie = ""
        return
    successor = _next_validator(selector, validator)
    if not _still_there(conn, row, _hash(successor) if current else None, now):
        # Deleted since we read it (a password reset, "log out everywhere"
        # committing meanwhile): it signs no one in.
        sess.remember_cookie = ""
        return
    if current:
        sess.remember_cookie = f"{selector}.{successor}"
    elif hmac.compare_digest(_hash(successor), row.token_hash):
        # Inside the grace (a lost answer, two tabs racing): the same new
        # validator the first request was given.
        sess.remember_cookie = f"{selector}.{successor}"
    sess.update({USER_ID_KEY: str(user.id), "_fresh": False, ADMIN_KEY: bool(user.is_admin),
                 REMEMBER_SELECTOR_KEY: selector})
    _seed_csrf(sess, app.config)


def _still_there(conn, row, successor_hash: Optional[str], now: datetime) -> bool:
    """Rotate the token ``row`` to ``successor_hash`` (or, None, just touch
    it), only if it is still as we read it: False when another unit deleted
    or rotated it meanwhile. The UPDATE waits for a unit deleting it to
    commit (the row lock), so a restore never outlives a reset's delete."""
    values = ({"token_hash": successor_hash, "previous_token_hash": row.token_hash, "rotated_at": now}
              if successor_hash else {"token_hash": row.token_hash})
    return conn.execute(sa.update(REMEMBER).where(
        REMEMBER.c.id == row.id, REMEMBER.c.token_hash == row.token_hash).values(**values)).rowcount == 1


def _session() -> ServerSession:
    sess = session._get_current_object()  # noqa: SLF001 - the concrete object
    if not isinstance(sess, ServerSession):
        raise RuntimeError("billvend.accounts.sessions needs ServerSessionInterface")
    return sess


def start(user: User, *, remember: bool) -> None:
    """Begin a signed-in session for ``user`` on this request: a new id, new
    data (and so a new CSRF token), fresh as of now; with ``remember`` a new
    per-device token. Call before ``flask_login.login_user``.

    The old session's row and this device's old remember token are deleted
    when the response is saved (a fixated or stolen old id dies with it).
    """
    sess = _session()
    old_selector = sess.get(REMEMBER_SELECTOR_KEY)
    sess.rotate()
    now = utcnow()
    selector, validator = secrets.token_hex(12), secrets.token_urlsafe(32)

    @transactions.unit_of_work
    def store_tokens() -> None:
        if old_selector:
            db.session.execute(sa.delete(REMEMBER).where(REMEMBER.c.selector == old_selector))
        if remember:
            db.session.execute(sa.insert(REMEMBER).values(
                selector=selector, token_hash=_hash(validator), user_id=user.id, created_at=now,
                expires_at=now + timedelta(seconds=current_app.config["REMEMBER_ME_SECONDS"]),
                user_agent=(request.user_agent.string or "")[:200] or None))

    if old_selector or remember:
        store_tokens()
    if remember:
        sess[REMEMBER_SELECTOR_KEY] = selector
        sess.remember_cookie = f"{selector}.{validator}"
    elif request.cookies.get(current_app.config["REMEMBER_COOKIE_NAME"]):
        sess.remember_cookie = ""
    sess[ADMIN_KEY] = bool(user.is_admin)
    sess[FRESH_AT_KEY] = time.time()
    _seed_csrf(sess, current_app.config)


def end() -> None:
    """Log this browser out: delete its session row, its remember token and
    every other session started from that token. Call after ``flask_login.logout_user``; a flash set afterwards still shows
    (it goes into a new anonymous session)."""
    sess = _session()
    selector = sess.get(REMEMBER_SELECTOR_KEY)
    if selector:
        def forget_device() -> None:
            # Every session started from this device's token goes too: one a
            # copy of the cookie started elsewhere must not outlive the logout.
            db.session.execute(sa.delete(SESSIONS).where(SESSIONS.c.remember_selector == selector))
            db.session.execute(sa.delete(REMEMBER).where(REMEMBER.c.selector == selector))

        transactions.run(forget_device)
    if selector or request.cookies.get(current_app.config["REMEMBER_COOKIE_NAME"]):
        sess.remember_cookie = ""
    sess.rotate()


def current_id_hash() -> Optional[str]:
    sess = _session()
    return _hash(sess.sid) if sess.sid else None


def end_other_sessions(user_id: int) -> int:
    """End every session of ``user_id`` but this request's, and every
    remember token but this device's (a password change, "log out
    everywhere"). Other users' sessions are untouched.

    :returns: how many sessions were ended.
    """
    keep = current_id_hash()
    selector = _session().get(REMEMBER_SELECTOR_KEY)
    query = sa.delete(SESSIONS).where(SESSIONS.c.user_id == user_id)
    if keep:
        query = query.where(SESSIONS.c.id_hash != keep)
    tokens = sa.delete(REMEMBER).where(REMEMBER.c.user_id == user_id)
    if selector:
        tokens = tokens.where(REMEMBER.c.selector != selector)

    @transactions.unit_of_work
    def delete() -> int:
        ended = db.session.execute(query).rowcount
        db.session.execute(tokens)
        return ended

    return delete()


def end_session(user_id: int, session_id: int) -> bool:
    """End one of ``user_id``'s sessions by its row id (the account page).

    :returns: False when no such session of that user exists.
    """
    return transactions.run(lambda: db.session.execute(sa.delete(SESSIONS).where(
        SESSIONS.c.id == session_id, SESSIONS.c.user_id == user_id)).rowcount == 1)


def active_sessions(user_id: int) -> list[dict]:
    """The user's live sessions, newest activity first: dicts with ``id``,
    ``created_at``, ``last_seen_at``, ``ip_address``, ``user_agent`` and
    ``current`` (this browser)."""
    now = utcnow()
    keep = current_id_hash()
    rows = db.session.execute(sa.select(SESSIONS).where(
        SESSIONS.c.user_id == user_id, SESSIONS.c.expires_at > now,
        SESSIONS.c.absolute_expires_at > now).order_by(SESSIONS.c.last_seen_at.desc())).all()
    return [{"id": r.id, "created_at": r.created_at, "last_seen_at": r.last_seen_at,
             "ip_address": r.ip_address, "user_agent": r.user_agent, "current": r.id_hash == keep}
            for r in rows]


def mark_fresh() -> None:
    """The user has just typed their password (re-authentication)."""
    session[FRESH_AT_KEY] = time.time()


def is_fresh(max_age_seconds: Optional[int] = None) -> bool:
    """True when the password was typed in this session within
    ``FRESH_LOGIN_SECONDS`` (or ``max_age_seconds``)."""
    max_age = max_age_seconds if max_age_seconds is not None else current_app.config["FRESH_LOGIN_SECONDS"]
    fresh_at = session.get(FRESH_AT_KEY)
    return bool(fresh_at) and time.time() - float(fresh_at) < max_age


def mark_second_factor() -> None:
    session[SECOND_FACTOR_KEY] = time.time()


def has_second_factor() -> bool:
    """True once the admin's TOTP or recovery code was given in this session."""
    return bool(session.get(SECOND_FACTOR_KEY))


def reserve_reauth_attempt() -> int:
    """Use up one password or code re-entry of this session, before the
    check (:func:`billvend.web.security.reentry`), so that requests sent in
    parallel on one session cannot each see the same count.

    :returns: how many this session has used, this one included.
    """
    sess = _session()
    if sess.sid is None:
        # No row yet (cannot happen for a POST that passed CSRF): count in
        # the session's data.
        count = int(sess.get(REAUTH_FAILURES_KEY) or 0) + 1
        sess[REAUTH_FAILURES_KEY] = count
        return count
    id_hash = _hash(sess.sid)

    @transactions.unit_of_work
    def use_one() -> int:
        db.session.execute(sa.update(SESSIONS).where(SESSIONS.c.id_hash == id_hash)
                           .values(reauth_failures=SESSIONS.c.reauth_failures + 1))
        # Our own UPDATE holds the row until commit: this reads our count.
        count = db.session.scalar(sa.select(SESSIONS.c.reauth_failures).where(SESSIONS.c.id_hash == id_hash))
        return int(count) if count is not None else 10**6  # the row is gone: the session ended

    return use_one()


def release_reauth_attempt() -> None:
    """Give back the attempt :func:`reserve_reauth_attempt` took: the
    password or code was right."""
    sess = _session()
    if sess.sid is None:
        sess[REAUTH_FAILURES_KEY] = max(0, int(sess.get(REAUTH_FAILURES_KEY) or 0) - 1)
        return
    id_hash = _hash(sess.sid)
    transactions.run(lambda: db.session.execute(
        sa.update(SESSIONS).where(SESSIONS.c.id_hash == id_hash, SESSIONS.c.reauth_failures > 0)
        .values(reauth_failures=SESSIONS.c.reauth_failures - 1)))


def untold_events(user_id: int) -> list[tuple[str, datetime]]:
    """The security events of ``user_id`` not yet told to them, oldest
    first, as ``(kind, created_at)``; marked told (one unit of work)."""

    @transactions.unit_of_work
    def take() -> list[tuple[str, datetime]]:
        rows = db.session.execute(sa.select(EVENTS.c.id, EVENTS.c.kind, EVENTS.c.created_at).where(
            EVENTS.c.user_id == user_id, EVENTS.c.notified_at.is_(None)).order_by(EVENTS.c.id)).all()
        if rows:
            db.session.execute(sa.update(EVENTS).where(EVENTS.c.id.in_([r.id for r in rows]))
                               .values(notified_at=utcnow()))
        return [(r.kind, r.created_at) for r in rows]

    return take()
