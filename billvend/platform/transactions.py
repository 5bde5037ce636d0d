"""The transaction rule: one owner of every database transaction.

DESIGN.md, "Transactions and external calls": each web request, task and CLI
command runs its database work in units of work; a unit is the ONE place that
commits, rolls back, and reruns the whole unit after a transient conflict
(deadlock, serialization failure, stale ORM version). Services (ledger,
payments, funding, admin actions, notifications) only stage and flush; they
never commit.

Rules this module enforces, so a mistake fails loudly in tests instead of
silently losing work:

* A unit of work never nests: entering one while another is open in the same
  session raises :class:`NestedUnitOfWork` (a rerun of the inner unit would
  roll back the outer unit's staged work, which is how an admin refund once
  lost its own ``unknown -> failed`` step).
* A unit never starts on top of uncommitted writes staged outside any unit
  (:class:`UncommittedWork`): those writes would be committed by, or lost in a
  retry of, a unit that does not own them.
* No external call inside a transaction: provider, gateway, SMS and email
  clients call :func:`require_no_transaction` before they touch the network,
  which raises :class:`ExternalCallInTransaction` inside a unit or while the
  session holds unflushed or flushed-but-uncommitted writes. A retry of a unit
  therefore never repeats an external call: record the intent and commit (one
  unit), make the call, record the result (a second unit, safe to repeat).

The session is Flask-SQLAlchemy's scoped session (one per app context), so
the markers live in ``Session.info`` and a task run inline by an immediate-mode
Huey in its own app context gets its own session, not a nested unit.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from typing import Callable, Optional, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from billvend.platform.extensions import db

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATEs that mean "this transaction lost a race; the same work would
# succeed if run again": serialization_failure, deadlock_detected.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})

_ACTIVE_UNIT = "billvend.unit_of_work"
_FLUSHED_OUTSIDE_UNIT = "billvend.flushed_outside_unit"


class TransactionRuleError(RuntimeError):
    """Code broke the transaction rule (a programming error, never user input)."""


class NestedUnitOfWork(TransactionRuleError):
    """A unit of work was entered while another one is open in this session."""


class UncommittedWork(TransactionRuleError):
    """A unit of work was entered on top of writes staged outside any unit."""


class ExternalCallInTransaction(TransactionRuleError):
    """An external call was about to be made inside a database transaction."""


def is_transient(exc: BaseException) -> bool:
    """True for errors that a fresh attempt of the same unit of work can fix.

    Those are the ORM's optimistic-lock failure (``StaleDataError``: a loaded
    row's ``version`` moved under us) and PostgreSQL's serialization failure
    and deadlock (SQLSTATE 40001, 40P01). Anything else (bad input, a
    constraint, the database being down) is not retried.
    """
    if isinstance(exc, StaleDataError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return sqlstate in TRANSIENT_SQLSTATES
    return False


def _has_uncommitted_writes(session: Session) -> bool:
    return bool(session.new or session.dirty or session.deleted
                or session.info.get(_FLUSHED_OUTSIDE_UNIT))


def has_uncommitted_writes() -> bool:
    """True when the current app context's session holds writes staged or
    flushed outside any unit of work (a bug in the caller)."""
    return _has_uncommitted_writes(db.session())


def in_unit_of_work() -> bool:
    """True while a unit of work is open in the current app context's session."""
    return _ACTIVE_UNIT in db.session().info


def require_no_transaction(call: str) -> None:
    """Refuse an external call (``call`` names it, for the error) made inside
    a unit of work or while the session holds uncommitted writes.

    Every outside-system client calls this first (DESIGN.md: "No external
    call inside a database transaction"). A read-only transaction the session
    may have begun is harmless and allowed: it holds no write lock, and the
    caller rolls it back or ends it when its app context ends.

    :raises ExternalCallInTransaction: when the rule would be broken.
    """
    session = db.session()
    if _ACTIVE_UNIT in session.info:
        raise ExternalCallInTransaction(
            f"{call}: external call inside the unit of work {session.info[_ACTIVE_UNIT]!r}")
    if _has_uncommitted_writes(session):
        raise ExternalCallInTransaction(f"{call}: external call with uncommitted writes in the session")


def unit_of_work(
    func: Optional[Callable[..., T]] = None,
    *,
    attempts: int = 5,
    base_delay_seconds: float = 0.005,
    max_delay_seconds: float = 0.2,
    on_retry: Optional[Callable[[int, BaseException], None]] = None,
):
    """Make a function one whole transaction: run it, commit, and on a
    transient conflict (:func:`is_transient`) roll back and run it again.

    The decorated function stages and flushes, never commits: the wrapper
    commits after it returns (a commit that loses a race is retried too) and
    rolls back whenever it raises, so the session is clean afterwards either
    way. Between attempts the caller sleeps a random time up to
    ``base_delay_seconds * 2**attempt``, capped at ``max_delay_seconds``
    ("full jitter"), so racing retries spread out. The function must be safe
    to rerun after a rollback and must make no external call (it cannot: see
    :func:`require_no_transaction`). Usable bare (``@unit_of_work``) or with
    options.

    :param attempts: total tries, at least 1; the last error is re-raised.
    :param on_retry: called with ``(attempt number, error)`` before each retry
        (benchmarks count retries with it).
    :raises NestedUnitOfWork: when called inside another unit of work.
    :raises UncommittedWork: when the session holds writes staged outside a unit.
    :raises: whatever the function raises (after rolling back); a transient
        error only once ``attempts`` are used up (the web layer then answers
        503, not 500).
    """

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs) -> T:
            session = db.session()
            if _ACTIVE_UNIT in session.info:
                raise NestedUnitOfWork(
                    f"{fn.__qualname__} called inside the unit of work {session.info[_ACTIVE_UNIT]!r}")
            if _has_uncommitted_writes(session):
                raise UncommittedWork(
                    f"{fn.__qualname__}: the session holds writes staged outside a unit of work")
            for attempt in range(1, attempts + 1):
                session.info[_ACTIVE_UNIT] = fn.__qualname__
                try:
                    result = fn(*args, **kwargs)
                    session.commit()
                    return result
                except BaseException as exc:
                    session.rollback()
                    if not isinstance(exc, Exception) or not is_transient(exc) or attempt == attempts:
                        raise
                    log.info("%s: transient conflict (%s), retry %d",
                             fn.__qualname__, type(exc).__name__, attempt)
                    if on_retry is not None:
                        on_retry(attempt, exc)
                finally:
                    session.info.pop(_ACTIVE_UNIT, None)
                cap = min(max_delay_seconds, base_delay_seconds * 2 ** attempt)
                time.sleep(random.uniform(0, cap))
            raise AssertionError("unreachable")  # pragma: no cover

        return wrapper

    return decorate(func) if func is not None else decorate


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` as one unit of work with default options
    (for a call site that has no function of its own to decorate)."""
    return unit_of_work(fn)(*args, **kwargs)


@event.listens_for(Session, "after_flush")
def _note_flush_outside_unit(session: Session, flush_context) -> None:
    # A flush outside any unit leaves writes in the open transaction that no
    # unit owns; remember it until the transaction ends.
    if _ACTIVE_UNIT not in session.info:
        session.info[_FLUSHED_OUTSIDE_UNIT] = True


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_soft_rollback")
def _forget_flush_outside_unit(session: Session, *args) -> None:
    session.info.pop(_FLUSHED_OUTSIDE_UNIT, None)
