"""Logs: one JSON object per line in production, one readable line in
development, with a request id that follows a payment.

``LOG_FORMAT`` picks the format: ``json`` (the default with
``BILLVEND_ENV=production``) for a log router, ``text`` (the default in
development, ``make run``) for a person reading a terminal:
``13:05:02 INFO billvend.vending.tasks: sweep re-drove 2 payments [req 1a2b…]``.
Both redact the same secrets.

Every web request gets a request id: the ``X-Request-ID`` header a router
sets (Heroku's does), when it looks like one, else a fresh random one. It is
sent back in the response's ``X-Request-ID`` header, stamped on every log
record the request writes (``request_id``), and stored on a payment the
request creates (``payments.request_id``). Before a Huey task for a payment
(``vend``, ``requery``, ``reverse``) runs, the worker looks that id up, so
the task's log lines carry the id of the request that paid, however many
requeries later.

Each request also writes one ``request`` line: method, endpoint and URL rule
(``/payments/<reference>``, never the path itself, which may carry a reset
link's token), status, and milliseconds.

Secrets never reach a log line: :class:`JsonFormatter` and
:class:`TextFormatter` mask anything that looks like a 20-digit token, a
password, an API or secret key, or a password reset or email verification
link in every string
they write, whoever logged it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import sys
import time
from typing import Any, Callable, Optional

from flask import Flask, g, request
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter
from sqlalchemy import event

log = logging.getLogger("billvend.request")

_request_id: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("billvend_request_id",
                                                                           default=None)
REQUEST_ID_HEADER = "X-Request-ID"
# What we accept from a router: short, plain characters (a uuid, Heroku's).
INCOMING_ID_RE = re.compile(r"[A-Za-z0-9._:-]{8,64}")

_REDACTIONS = (
    # A prepaid token: 20 digits, maybe grouped by four (DESIGN.md, Vending).
    (re.compile(r"(?<![0-9A-Za-z])\d{4}(?:[- ]?\d{4}){4}(?![0-9A-Za-z])"), "[token]"),
    # A stored password hash by its shape (werkzeug's "method$salt$hex"), as
    # a database error quotes it among its parameters, with no column name.
    (re.compile(r"(?i)\b(?:scrypt|pbkdf2)(?::[\w.]+)*\$[^\s$'\",]+\$[0-9a-f]{16,}"), "[password-hash]"),
    # key=value, "key": "value" and header forms of secrets.
    (re.compile(r"(?i)((?:password(?:[-_ ]?hash)?|passwd|secret[-_ ]?key|api[-_ ]?key|authorization|token"
                r"|totp[-_ ]?secret)"
                r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',&]+)"), r"\1[redacted]"),
    # A password reset or email verification link's token.
    (re.compile(r"(?i)(/(?:reset|verify-email)[-_/a-z]*/)[^\s\"'?#]+"), r"\1[redacted]"),
)


def current_request_id() -> Optional[str]:
    """The request id of the web request or task running in this thread."""
    return _request_id.get()


def set_request_id(value: Optional[str]) -> contextvars.Token:
    """Make ``value`` this thread's request id; returns the token to reset it."""
    return _request_id.set(value)


def redact(text: str) -> str:
    """``text`` with tokens, passwords, keys and reset links masked."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (None outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


class JsonFormatter(_BaseJsonFormatter):
    """python-json-logger's formatter with ``time``, ``level``, ``logger``,
    ``message`` and ``request_id``, and every string value redacted."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", False)
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s", *args, **kwargs)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: redact(value) if isinstance(value, str) else value for key, value in log_data.items()}


class TextFormatter(logging.Formatter):
    """One readable line per record, redacted as :class:`JsonFormatter` is:
    time, level, logger, message, the ``extra`` fields a record carries
    (``status=200 duration_ms=3.1``) and the request id when there is one."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "message", "asctime", "request_id", "taskName"}

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in vars(record).items()
                          if key not in self._STANDARD and value is not None)
        if extras:
            line += f" ({extras})"
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" [req {request_id}]"
        return redact(line)


#: The names of the root handlers :func:`configure` installs.
HANDLER_NAMES = ("billvend-json", "billvend-text")


def json_handler(stream=None) -> logging.Handler:
    """A stream handler (stderr by default) writing JSON lines with request ids."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    handler.set_name("billvend-json")
    return handler


def text_handler(stream=None) -> logging.Handler:
    """A stream handler (stderr by default) writing readable, redacted lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler.set_name("billvend-text")
    return handler


def has_json_root_handler() -> bool:
    """True when :func:`configure` installed its root handler (JSON or text)."""
    return any(h.get_name() in HANDLER_NAMES for h in logging.getLogger().handlers)


def configure(app: Flask) -> None:
    """Send the process's logs to stderr, as JSON lines (``LOG_FORMAT=json``,
    production's default) or readable lines (``text``, development's),
    unless logging is already set up (pytest's capture, a host's own
    handlers); stamp request ids; time and log each request."""
    root = logging.getLogger()
    if not app.testing and not root.handlers:
        root.addHandler(json_handler() if app.config["LOG_FORMAT"] == "json" else text_handler())
        root.setLevel(logging.INFO)

    @app.before_request
    def _begin():
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        rid = incoming if INCOMING_ID_RE.fullmatch(incoming) else secrets.token_hex(12)
        g.request_id = rid
        g.request_id_token = set_request_id(rid)
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response):
        rid = g.get("request_id")
        if rid:
            response.headers[REQUEST_ID_HEADER] = rid
            started = g.get("request_started")
            log.info("request", extra={
                "method": request.method, "endpoint": request.endpoint,
                "rule": request.url_rule.rule if request.url_rule else None,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
            })
        return response

    @app.teardown_request
    def _end(exc):
        token = g.pop("request_id_token", None)
        if token is not None:
            try:
                _request_id.reset(token)
            except ValueError:  # set in another context (a streamed response)
                _request_id.set(None)


def _stamp_request_id(mapper, connection, target) -> None:
    if getattr(target, "request_id", None) is None:
        target.request_id = _request_id.get()


_task_hooks_installed = False


def install(huey, stamped: tuple = (), request_id_of_task: Optional[Callable[[Any], Optional[str]]] = None
            ) -> None:
    """Stamp log records, and new rows of the ``stamped`` models, with the request id, and
    give each task the request id ``request_id_of_task(task)`` finds for it (vending: the
    request that created the task's payment). Idempotent (``create_app`` runs many times in
    tests). The domains pass their models and lookup in, so the platform imports none."""
    global _task_hooks_installed
    if _task_hooks_installed:
        return
    _task_hooks_installed = True

    # Every record gets its request id when it is made, so any handler (the
    # JSON one, gunicorn's, pytest's capture) can show it.
    make_record = logging.getLogRecordFactory()

    def _record_with_request_id(*args, **kwargs):
        record = make_record(*args, **kwargs)
        record.request_id = _request_id.get()
        return record

    logging.setLogRecordFactory(_record_with_request_id)

    for model in stamped:
        event.listen(model, "before_insert", _stamp_request_id)

    @huey.pre_execute()
    def _task_request_id(task):
        rid = request_id_of_task(task) if request_id_of_task is not None else None
        task._billvend_request_id_token = set_request_id(rid or _request_id.get())  # noqa: SLF001

    @huey.post_execute()
    def _task_done(task, task_value, exc):
        token = getattr(task, "_billvend_request_id_token", None)
        if token is not None:
            try:
                _request_id.reset(token)
            except ValueError:
                _request_id.set(None)
