"""Safe on the open internet: the pieces around the money.

* :func:`init_app` wires them into an app: ProxyFix (``TRUSTED_PROXY_HOPS``),
  security headers through Flask-Talisman (CSP, ``frame-ancestors 'none'``,
  nosniff, Referrer-Policy, Permissions-Policy, HSTS in production),
  ``Cache-Control: no-store`` on every dynamic response, server-side sessions
  (:mod:`billvend.accounts.sessions`), Flask-Limiter with the route limits of
  :data:`ROUTE_LIMITS`, the 413 and 429 pages, and the gates that send a user
  with a weak password to change it.
* Helpers the forms and views share: :func:`normalise_email`,
  :func:`password_problem`, :func:`safe_next`, :func:`check_password_evenly`,
  the known-device cookie that exempts a returning browser from the
  per-account login slowdown.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import unicodedata
from typing import Callable, Optional
from urllib.parse import parse_qs, urlsplit

from flask import (Flask, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from flask_limiter import RateLimitExceeded
from flask_login import current_user, logout_user
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import RequestEntityTooLarge, TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.security import check_password_hash, generate_password_hash

from billvend.accounts import sessions, stepup
from billvend.platform import transactions
from billvend.platform.blocking import off_the_loop
from billvend.platform.config import origin_of
from billvend.platform.extensions import db, limiter, talisman

log = logging.getLogger(__name__)

PERMISSIONS_POLICY = {
    "camera": "()", "microphone": "()", "geolocation": "()", "payment": "()", "usb": "()",
    "interest-cohort": "()", "browsing-topics": "()",
}
KNOWN_DEVICE_COOKIE = "known_device"
KNOWN_DEVICE_SECONDS = 365 * 24 * 3600

# --- Emails ----------------------------------------------------------------


def normalise_email(raw: str) -> str:
    """The one spelling of an email address we store and look up: Unicode
    NFKC (full-width and compatibility characters folded), stripped, case
    folded (Unicode's caseless matching, so ``ß`` and ``SS`` agree).

    :raises ValueError: (message for the form) a part mixes scripts with
        characters that look like another script's (``pаypal`` with a
        Cyrillic ``а``): a homograph of someone else's address. Checked with
        confusable-homoglyphs (Unicode TR39 confusables).
    """
    from confusable_homoglyphs import confusables

    email = unicodedata.normalize("NFKC", raw or "").strip().casefold()
    for part in email.replace("@", ".").split("."):
        if part and confusables.is_dangerous(part):
            raise ValueError("This address mixes look-alike letters from different alphabets. "
                             "Type it again in one alphabet.")
    return email


# --- Passwords -------------------------------------------------------------


def password_problem(password: str, email: Optional[str] = None) -> Optional[str]:
    """Why ``password`` is refused (a sentence for the form), or ``None``.

    Rules (NIST SP 800-63B 5.1.1.2): at least ``MIN_PASSWORD_LENGTH`` (10)
    characters, at most 128; not a common or easily guessed password (zxcvbn
    score below 2, which covers its lists of common passwords, names and
    words, keyboard patterns and dates); not containing the email address or
    its name part.
    """
    import re

    from zxcvbn import zxcvbn

    minimum = current_app.config.get("MIN_PASSWORD_LENGTH", 10) if current_app else 10
    if len(password) < minimum:
        return f"Use at least {minimum} characters."
    if len(password) > 128:
        return "Use at most 128 characters."
    folded = password.casefold()
    if email:
        if email.casefold() in folded:
            return "Do not use your email address in your password."
        local = email.split("@", 1)[0].casefold()
        # The name part counts as a word of its own ("ops2024"), not inside
        # another word: "badminton" does not contain the address admin@….
        if len(local) >= 3 and re.search(rf"(?<![^\W\d_]){re.escape(local)}(?![^\W\d_])", folded):
            return f"Do not use your email address or its name part ({local}) in your password."
    result = zxcvbn(password[:100], user_inputs=[email] if email else [])
    if result["score"] < 2:
        warning = result["feedback"].get("warning") or "This password is too easy to guess."
        return f"{warning.rstrip('.')}. Choose a longer, less common password (a few unrelated words work well)."
    return None


#: A real scrypt hash of a random password, checked when the email is
#: unknown so that a login costs the same either way (no enumeration by time).
_DUMMY_HASH: Optional[str] = None


def check_password_evenly(user, password: str) -> bool:
    """``user.check_password(password)``, doing the same hashing work when
    ``user`` is ``None`` (and then returning False)."""
    global _DUMMY_HASH
    if user is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = off_the_loop(generate_password_hash,
                                       hashlib.sha256(str(time.time()).encode()).hexdigest())
        off_the_loop(check_password_hash, _DUMMY_HASH, password)
        return False
    return user.check_password(password)


# --- Redirect targets ------------------------------------------------------


def safe_next(target: Optional[str], default: str) -> str:
    """``target`` when it is a same-site path, else ``default``.

    Refused: anything with a control character (CR/LF would split the
    ``Location`` header), a backslash (browsers read ``/\\evil`` as
    ``//evil``), a scheme, a host, or a protocol-relative ``//``.
    """
    if not target or len(target) > 2000 or not target.startswith("/") or target.startswith("//"):
        return default
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target) or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


def same_site_path(url: str) -> Optional[str]:
    """The path (and query) of ``url`` when it is a URL of this very host
    and a safe same-site path (:func:`safe_next`); else None. For the
    ``Referer`` and ``HX-Current-URL`` headers, which name whole URLs."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        return None
    if not parts.netloc or parts.netloc != request.host:
        return None
    return safe_next(parts.path + (f"?{parts.query}" if parts.query else ""), "") or None


def external_url(endpoint: str, **values) -> str:
    """The absolute URL of ``endpoint`` to give to the outside (the
    gateway's callback URL; reset and verification links next): built on
    ``PUBLIC_BASE_URL`` when it is set (always in production), never on the
    request's ``Host`` header, which the client chooses."""
    base = current_app.config.get("PUBLIC_BASE_URL")
    if not base:
        return url_for(endpoint, _external=True, **values)
    return base.rstrip("/") + url_for(endpoint, _external=False, **values)


def referrer_path() -> Optional[str]:
    """The same-site path of the page this request came from (``Referer``), or None."""
    return same_site_path(request.headers.get("Referer", ""))


# --- The known-device cookie (per-account slowdown without lockout) --------


def _account_digest(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:32]


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="billvend.known-device")


def remember_device(response, email: str) -> None:
    """After a successful login: this browser may log in to ``email`` even
    while strangers have tripped the account's failed-login limit (OWASP's
    "device cookies"), so the limit slows attackers without locking the owner out."""
    response.set_cookie(
        KNOWN_DEVICE_COOKIE, _device_serializer().dumps(_account_digest(email)),
        max_age=KNOWN_DEVICE_SECONDS, httponly=True, samesite="Lax",
        secure=current_app.config["SESSION_COOKIE_SECURE"])


def is_known_device(email: str) -> bool:
    """This browser has signed in to ``email`` before (its device cookie)."""
    return _is_known_device(email)


def _is_known_device(email: Optional[str] = None) -> bool:
    """This browser has signed in to ``email`` (default: the form's) before."""
    raw = request.cookies.get(KNOWN_DEVICE_COOKIE)
    if not raw:
        return False
    try:
        digest = _device_serializer().loads(raw, max_age=KNOWN_DEVICE_SECONDS)
    except BadSignature:
        return False
    return digest == _account_digest(_form_email() if email is None else email)


# --- Password and code re-entry inside a session -------------------------------

#: Wrong passwords or codes one session may see before it is ended.
MAX_REAUTH_FAILURES = 5
#: Scope of the per-account failed-login counter (RATELIMIT_LOGIN_ACCOUNT).
LOGIN_ACCOUNT_SCOPE = "login-account"


def _account_email() -> str:
    """The signed-in user's email, spelled as the login form's key."""
    if not current_user.is_authenticated:
        return "-"
    try:
        return normalise_email(current_user.email)[:254] or "-"
    except ValueError:
        return "-"


def _count_account_failure(email: str) -> None:
    """One failed password or code check against ``email``'s failed-login
    limit: the same counter /login and /signup spend, whatever the device."""
    from limits import parse_many

    if not limiter.enabled:
        return
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX") or ""
    try:
        for item in parse_many(current_app.config["RATELIMIT_LOGIN_ACCOUNT"]):
            limiter.limiter.hit(item, *([prefix] if prefix else []), email, LOGIN_ACCOUNT_SCOPE)
    except Exception as error:  # noqa: BLE001 - the limit store is down: the
        # per-session count below still ends the session.
        log.error("failed-login limit unavailable: %s", error)


def reentry(what: str, check: Callable[[], bool]):
    """Check a password or code typed inside a signed-in session (``what``:
    "password", "second-factor code"; for the log); ``check()`` says whether
    it is right.

    The attempt is taken from the session's allowance before ``check`` runs
    (a right answer gives it back), so parallel requests get no more than
    :data:`MAX_REAUTH_FAILURES` wrong tries between them. A wrong one counts
    against the account's failed-login limit too. At the
    :data:`MAX_REAUTH_FAILURES`-th wrong one the session ends (a thief
    holding a copied session is out; the owner signs in again as usual,
    their other sessions untouched), a ``reauth_locked`` security event is
    recorded and the owner is told at their next sign-in.

    :returns: ``(right, response)``: ``response`` is ``None``, or the
        redirect to the login page the view must return (the session ended).
    """
    user_id, email = current_user.id, _account_email()
    used = sessions.reserve_reauth_attempt()
    if used <= MAX_REAUTH_FAILURES:
        if check():
            sessions.release_reauth_attempt()
            return True, None
        _count_account_failure(email)
        if used < MAX_REAUTH_FAILURES:
            return False, None
        transactions.run(lambda: sessions.record_event(db.session, user_id, sessions.REAUTH_LOCKED))
        log.warning("user %s: %d wrong re-entries (%s) in one session from %s; session ended",
                    user_id, MAX_REAUTH_FAILURES, what, client_ip())
    logout_user()
    sessions.end()
    flash(f"You were signed out because a wrong password or code was typed {MAX_REAUTH_FAILURES} times. "
          "Sign in again to go on.", "warning")
    return False, redirect(url_for("auth.login"), code=303)


def _reauth_account_limit() -> Callable:
    """The failed-login limit on the re-entry forms: once strangers (or
    re-entries) have spent it, a browser that never signed in to the account
    is refused (429); a known device never is. Counting is done by
    :func:`reentry`, so this only checks."""
    return limiter.shared_limit(_limit("RATELIMIT_LOGIN_ACCOUNT"), scope=LOGIN_ACCOUNT_SCOPE,
                                methods=["POST"], key_func=_account_email,
                                deduct_when=lambda response: False,
                                exempt_when=lambda: _is_known_device(_account_email()))


# --- Step-up before money leaves ---------------------------------------------

#: What the hold page calls each kind of change.
HOLD_REASONS = {
    sessions.PASSWORD_RESET: "your password was reset",
    sessions.EMAIL_CHANGED: "your email address was changed",
    sessions.PHONE_CHANGED: "your phone number was changed",
}


def require_no_hold():
    """The first half of :func:`require_step_up`: the hold page (403) naming
    the change and when money can leave again, when a password reset, email
    change or phone change was made in the last 24 h; else None."""
    hold = stepup.hold_of(current_user.id)
    if hold is None:
        return None
    log.info("user %s: step-up refused, %s at %s", current_user.id, hold.kind, hold.since.isoformat())
    return render_template("account/step_up_hold.html", reason=HOLD_REASONS.get(hold.kind, hold.kind),
                           since=hold.since, until=hold.until), 403


def require_step_up(next_url: str | None = None):
    """The step-up check before money leaves the signed-in customer's wallet
    (withdrawals, transfers; :mod:`billvend.accounts.stepup`).

    :param next_url: where ``/account/confirm`` sends the customer back to
        (a local path); default this GET's own URL, or a POST's path.
    :returns: None when it may leave now; else the response the view must
        return: the hold page (403, :func:`require_no_hold`), checked first
        (typing the password would not help); or a 303 to
        ``/account/confirm`` with ``next`` back here, when the password was
        not typed in this session within 10 minutes.
    """
    held = require_no_hold()
    if held is not None:
        return held
    if not stepup.password_is_fresh():
        flash("For your security, type your password again before money leaves your wallet.", "info")
        target = next_url or (request.full_path if request.method == "GET" else request.path)
        return redirect(url_for("account.confirm_password", next=target), code=303)
    return None


def step_up_required(view):
    """Decorate a view that sends money out of the customer's wallet (under
    ``login_required``): it runs only when :func:`require_step_up` passes."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        refused = require_step_up()
        return refused if refused is not None else view(*args, **kwargs)

    return guarded


# --- Rate limits -----------------------------------------------------------


def _limit(name: str) -> Callable[[], str]:
    return lambda: current_app.config[name]


def client_ip() -> str:
    """The client's address (ProxyFix makes it the real one behind
    ``TRUSTED_PROXY_HOPS`` proxies)."""
    return request.remote_addr or "unknown"


def _form_email() -> str:
    try:
        return normalise_email(request.form.get("email", ""))[:254] or "-"
    except ValueError:
        return "-"


def _user_key() -> str:
    return f"user:{current_user.get_id()}" if current_user.is_authenticated else f"ip:{client_ip()}"


def _account_phone() -> str:
    """The signed-in customer's phone (E.164), where their codes go; "-" for none."""
    return (current_user.phone or "-") if current_user.is_authenticated else "-"


def _login_failed(response) -> bool:
    return response.status_code == 422


#: Set in ``g`` by the signup view when an existing account's email came
#: with a wrong password (signup signs the owner in, so it is a login door).
SIGNUP_WRONG_PASSWORD = "signup_wrong_password"


#: Set in ``g`` by /account/email when it answered "another account uses
#: that address": counted like a verification mail (RATELIMIT_EMAIL_VERIFICATION_USER).
EMAIL_TAKEN_ANSWERED = "email_taken_answered"


def _signup_guess_failed(response) -> bool:
    return bool(g.get(SIGNUP_WRONG_PASSWORD))


def _account_limit(deduct_when: Callable) -> Callable:
    """The failed-login limit per account (``RATELIMIT_LOGIN_ACCOUNT``, keyed
    by the form's email), ONE counter shared by every door that checks a
    password: /login and /signup (which signs in an owner who types their
    email and right password). A known device is exempt."""
    return limiter.shared_limit(_limit("RATELIMIT_LOGIN_ACCOUNT"), scope=LOGIN_ACCOUNT_SCOPE, methods=["POST"],
                                key_func=_form_email, deduct_when=deduct_when,
                                exempt_when=_is_known_device)


def _meter_key() -> str:
    return f"{request.form.get('disco', '')}:{request.form.get('meter_number', '')}"[:80]


def _check_distinct_meters() -> None:
    """Meter verification: at most ``RATELIMIT_VERIFY_DISTINCT_METERS``
    different meters per user (asking again about a meter already seen this
    hour is free), so names and addresses cannot be harvested in bulk."""
    from limits import parse_many

    if not limiter.enabled:
        return
    strategy = limiter.limiter
    seen_limit = parse_many("1 per hour")[0]
    user = _user_key()
    log.info("meter verification by %s from %s: %s", user, client_ip(), _meter_key())
    try:
        if not strategy.hit(seen_limit, "billvend", "verify-seen", user, _meter_key()):
            return  # already asked about this meter this hour
        for item in parse_many(current_app.config["RATELIMIT_VERIFY_DISTINCT_METERS"]):
            if not strategy.hit(item, "billvend", "verify-distinct", user):
                reset_at = strategy.get_window_stats(item, "billvend", "verify-distinct", user).reset_time
                log.warning("meter verification: %s passed %s distinct meters", user, item)
                raise TooManyRequests(retry_after=max(1, int(reset_at - time.time())))
    except TooManyRequests:
        raise
    except Exception as error:  # noqa: BLE001 - the limit store is down: the per-user
        # and per-IP limits (in-memory fallback) still hold; the meter is verified.
        log.error("distinct-meter limit unavailable: %s", error)


def check_distinct_recipients(recipient_key: str) -> None:
    """The transfer page's recipient lookups: at most
    ``TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR`` different recipients per user an
    hour (looking up one already seen this hour is free), so the review step
    cannot list who has an account. Call it before the lookup.

    :param recipient_key: the normalised email or E.164 phone looked up.
    :raises werkzeug.exceptions.TooManyRequests: (429 with Retry-After) past it.
    """
    from limits import RateLimitItemPerHour, parse_many

    if not limiter.enabled:
        return
    strategy = limiter.limiter
    user = _user_key()
    item = RateLimitItemPerHour(current_app.config["TRANSFER_RECIPIENT_LOOKUPS_PER_HOUR"])
    try:
        if not strategy.hit(parse_many("1 per hour")[0], "billvend", "recipient-seen", user,
                            recipient_key[:254]):
            return  # already looked up this hour
        if not strategy.hit(item, "billvend", "recipient-distinct", user):
            reset_at = strategy.get_window_stats(item, "billvend", "recipient-distinct", user).reset_time
            log.warning("transfer recipients: %s passed %s distinct lookups", user, item)
            raise TooManyRequests(retry_after=max(1, int(reset_at - time.time())))
    except TooManyRequests:
        raise
    except Exception as error:  # noqa: BLE001 - the limit store is down: the per-user
        # submit limit (in-memory fallback) still holds.
        log.error("distinct-recipient limit unavailable: %s", error)


def _with_distinct_meter_check(view):
    @functools.wraps(view)  # Flask-Limiter keys the outer limits by this name
    def checked(*args, **kwargs):
        _check_distinct_meters()
        return view(*args, **kwargs)

    return checked


def _limits_for(endpoint: str) -> list[Callable]:
    """The decorators applied to ``endpoint``'s view (outermost last)."""
    post = ["POST"]
    if endpoint == "auth.login":
        return [
            limiter.limit(_limit("RATELIMIT_LOGIN_IP"), methods=post, scope="login-ip", key_func=client_ip),
            limiter.limit(_limit("RATELIMIT_LOGIN_ACCOUNT_IP"), methods=post, scope="login-account-ip",
                          key_func=lambda: f"{_form_email()}|{client_ip()}"),
            _account_limit(_login_failed),
        ]
    if endpoint == "auth.signup":
        return [limiter.limit(_limit("RATELIMIT_SIGNUP_IP"), methods=post, scope="signup-ip",
                              key_func=client_ip),
                _account_limit(_signup_guess_failed)]
    if endpoint == "account.two_factor":
        return [limiter.limit(_limit("RATELIMIT_TWO_FACTOR"), methods=post, scope="two-factor",
                              key_func=_user_key),
                _reauth_account_limit()]
    if endpoint in ("account.password", "account.confirm_password"):
        return [_reauth_account_limit()]
    if endpoint == "account.send_phone_code":
        # Each send is an SMS we pay for, to a number the form names: one a
        # minute and a few an hour per customer.
        # Per number too: accounts naming one victim's number must not text it without end.
        return [limiter.limit(_limit("RATELIMIT_PHONE_CODE_USER"), methods=post, scope="phone-code-user",
                              key_func=_user_key),
                limiter.limit(_limit("RATELIMIT_PHONE_CODE_PHONE"), methods=post, scope="phone-code-phone",
                              key_func=_account_phone, exempt_when=lambda: _account_phone() == "-")]
    if endpoint == "bills.verify":
        # Innermost first: a request refused by the per-user or per-IP limit
        # never counts as a new meter.
        return [
            _with_distinct_meter_check,
            limiter.limit(_limit("RATELIMIT_VERIFY_USER"), scope="verify-user", key_func=_user_key),
            limiter.limit(_limit("RATELIMIT_VERIFY_IP"), scope="verify-ip", key_func=client_ip),
        ]
    if endpoint == "bills.electricity":
        return [limiter.limit(_limit("RATELIMIT_PAYMENT_USER"), methods=post, scope="payment-user",
                              key_func=_user_key)]
    if endpoint == "wallet.transfer":
        return [limiter.limit(_limit("RATELIMIT_TRANSFER_USER"), methods=post, scope="transfer-user",
                              key_func=_user_key)]
    if endpoint == "wallet.fund":
        return [limiter.limit(_limit("RATELIMIT_FUNDING_USER"), methods=post, scope="funding-user",
                              key_func=_user_key)]
    if endpoint in ("auth.forgot_password", "auth.reset_password"):
        # Per address whether or not it has an account (the same answer for
        # both); per IP for one client trying many addresses or links.
        limits = [limiter.limit(_limit("RATELIMIT_PASSWORD_RESET_IP"), methods=post,
                                scope=f"{endpoint}-ip", key_func=client_ip)]
        if endpoint == "auth.forgot_password":
            limits.append(limiter.limit(_limit("RATELIMIT_PASSWORD_RESET_EMAIL"), methods=post,
                                        scope="password-reset-email", key_func=_form_email))
        return limits
    if endpoint in ("account.resend_verification", "account.email"):
        # Each verification mail sent counts, and each "another account
        # uses that address" (it tells which addresses have accounts); any
        # other refused form does not.
        limits = [limiter.shared_limit(_limit("RATELIMIT_EMAIL_VERIFICATION_USER"), scope="verification-mail",
                                       methods=post, key_func=_user_key,
                                       deduct_when=lambda response: response.status_code == 303
                                       or bool(g.get(EMAIL_TAKEN_ANSWERED)))]
        return limits + ([_reauth_account_limit()] if endpoint == "account.email" else [])
    if endpoint == "webhooks.paystack_webhook":
        # Generous: the gateway retries in bursts and the signature check is
        # cheap; this only stops a flood of forged bodies from one address.
        return [limiter.limit(_limit("RATELIMIT_WEBHOOK_IP"), methods=post, scope="webhook-ip",
                              key_func=client_ip)]
    raise KeyError(endpoint)


#: Endpoints with their own limits.
ROUTE_LIMITS = ("auth.login", "auth.signup", "account.two_factor", "account.password",
                "account.confirm_password", "account.send_phone_code", "bills.verify",
                "bills.electricity", "wallet.fund", "wallet.transfer", "webhooks.paystack_webhook",
                "auth.forgot_password", "auth.reset_password", "account.resend_verification",
                "account.email")

# Flask-Limiter registers a decorated limit by the view's name, once per
# process: wrap each view function once and reuse the wrapper in every app.
_wrapped: dict[Callable, Callable] = {}


def _apply_route_limits(app: Flask) -> None:
    for endpoint in ROUTE_LIMITS:
        view = app.view_functions.get(endpoint)
        if view is None:
            raise RuntimeError(f"billvend.web.security.ROUTE_LIMITS names {endpoint!r}, which is not a route")
        if view not in _wrapped:
            limited = view
            for decorate in _limits_for(endpoint):
                limited = decorate(limited)
            limited.__name__ = view.__name__
            limited.__module__ = view.__module__
            limited.__qualname__ = view.__qualname__
            _wrapped[view] = limited
        app.view_functions[endpoint] = _wrapped[view]


def _skip_limiter_middleware(app: Flask) -> None:
    """Drop Flask-Limiter's ``before_request`` check when no application,
    default or meta limit is configured (ours are all route limits,
    :data:`ROUTE_LIMITS`): in a ``before_request`` Flask-Limiter evaluates
    only those, while a route limit is checked by its decorator around the
    view. So the check cost every other request (a page, a poll, a static
    file) about 0.2 ms and decided nothing."""
    from flask_limiter import Limiter

    manager = limiter.limit_manager
    if manager.application_limits or manager.default_limits or limiter._meta_limits:  # noqa: SLF001
        return  # some limit applies to every request: keep the check
    hooks = app.before_request_funcs.get(None, [])
    hooks[:] = [hook for hook in hooks if getattr(hook, "__func__", None) is not Limiter._check_request_limit]


# --- htmx and the login redirect -------------------------------------------


def login_redirect_for_htmx(response):
    """Turn Flask-Login's redirect to the login page into an ``HX-Redirect``
    when the request came from htmx.

    The browser's XMLHttpRequest follows a 302 by itself, so htmx would get
    the login page and swap all of it into the fragment it was refreshing
    (the payment's status panel, the meter check), and a status panel
    replaced that way never polls again. With ``HX-Redirect`` htmx loads the
    login page as a page instead; ``next`` is the page the customer was on
    (``HX-Current-URL``), not the fragment's URL. The answer is a 401 with
    no body, so nothing is swapped in.

    :param response: the response a view (or Flask-Login) produced.
    :returns: ``response`` unchanged, or the 401 with ``HX-Redirect``.
    """
    if request.headers.get("HX-Request") != "true" or response.status_code not in (301, 302, 303, 307, 308):
        return response
    login_path = url_for("auth.login")
    location = urlsplit(response.headers.get("Location", ""))
    if location.path != login_path or location.netloc not in ("", request.host):
        return response
    # The page the customer was on (htmx names it), else the redirect's own next.
    target = (same_site_path(request.headers.get("HX-Current-URL", ""))
              or parse_qs(location.query).get("next", [None])[0])
    redirect_to = url_for("auth.login", next=safe_next(target, "") or None)
    htmx_response = current_app.response_class(status=401)
    htmx_response.headers["HX-Redirect"] = redirect_to
    # Any cookie the redirect set (the session holding the flash) still counts.
    for value in response.headers.getlist("Set-Cookie"):
        htmx_response.headers.add("Set-Cookie", value)
    htmx_response.vary.add("HX-Request")
    return htmx_response


# --- Wiring ----------------------------------------------------------------


def content_security_policy(config) -> dict[str, str]:
    """The CSP: only our own origin, plus exactly the outside sources the
    configuration uses (htmx from its CDN URL; the gateway's checkout as a
    form target, since funding redirects there after a POST)."""
    scripts = ["'self'"]
    htmx = config["HTMX_URL"]
    if origin_of(htmx):
        scripts.append(htmx)  # the exact file: its SRI hash is checked too
    form_action = ["'self'"]
    for url in (config.get("PAYSTACK_BASE_URL"), config.get("PAYSTACK_CHECKOUT_URL")):
        origin = origin_of(url)
        if origin and origin not in form_action:
            form_action.append(origin)
    return {
        "default-src": "'self'",
        "script-src": " ".join(scripts),
        "style-src": "'self'",
        "img-src": "'self' data:",
        "font-src": "'self'",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": " ".join(form_action),
        "frame-ancestors": "'none'",
    }


def init_app(app: Flask) -> None:
    """Wire every piece above into ``app`` (after its blueprints)."""
    config = app.config
    production = config["BILLVEND_ENV"] == "production"
    hops = config["TRUSTED_PROXY_HOPS"] or 0
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0)

    app.session_interface = sessions.ServerSessionInterface()

    talisman.init_app(
        app,
        force_https=production,
        frame_options="DENY",
        strict_transport_security=production,
        strict_transport_security_include_subdomains=True,
        content_security_policy=content_security_policy(config),
        referrer_policy="same-origin",
        permissions_policy=PERMISSIONS_POLICY,
        session_cookie_secure=production,
        session_cookie_http_only=True,
        session_cookie_samesite="Lax",
    )
    # Talisman trusts a client's X-Forwarded-Proto for HSTS and its HTTPS
    # redirect; behind our ProxyFix, request.is_secure is the truth.
    app.config["SESSION_COOKIE_SECURE"] = production

    limiter.init_app(app)
    _apply_route_limits(app)
    _skip_limiter_middleware(app)

    def session_store_down():
        # The session could not be read because the database is down: say
        # so (the 503 page, billvend.__init__) before CSRF or login checks
        # misread the missing session as a bad or anonymous request.
        broken = getattr(session._get_current_object(), "error", None)  # noqa: SLF001
        if broken is not None:
            raise broken

    app.before_request_funcs.setdefault(None, []).insert(0, session_store_down)

    @app.after_request
    def no_store(response):
        # Pages carry balances, tokens, statements, CSRF tokens or admin
        # data; none may sit in a shared or browser cache.
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
            response.headers.setdefault("Pragma", "no-cache")
        return response

    @app.before_request
    def weak_password_gate():
        if (session.get(sessions.MUST_CHANGE_PASSWORD_KEY) and current_user.is_authenticated
                and request.endpoint not in {"account.password", "auth.logout", "static"}):
            if request.method == "GET":
                flash("Please choose a stronger password before you go on.", "warning")
            return redirect(url_for("account.password"), code=303)
        return None

    @app.after_request
    def htmx_login_redirect(response):
        return login_redirect_for_htmx(response)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        return render_template("errors/413.html"), 413

    @app.errorhandler(429)
    def too_many(error):
        retry_after = 60
        if isinstance(error, RateLimitExceeded):
            current = limiter.current_limit
            if current is not None:
                retry_after = max(1, int(current.reset_at - time.time()))
        elif getattr(error, "retry_after", None):
            retry_after = int(error.retry_after)
        log.warning("rate limited: %s %s from %s", request.method, request.path, client_ip())
        g.retry_after = retry_after
        response = app.make_response((render_template("errors/429.html", retry_after=retry_after), 429))
        response.headers["Retry-After"] = str(retry_after)
        return response
