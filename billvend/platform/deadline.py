"""A hard wall-clock deadline for one outside call.

``requests`` timeouts bound each socket operation (connect, each read), not
the call: a server that trickles a byte every few seconds keeps a call alive
for ever. :func:`call_with_deadline` runs the call on its own daemon thread
and waits at most ``deadline_seconds`` for it, so the CALLER gets an answer
or :class:`DeadlineExceeded` in time, whatever the socket does. The
abandoned thread ends by itself on its per-operation timeouts (pass ones no
longer than the deadline); its result is discarded.

Reusable by any client (the VTpass client has the same need: issue 12).
"""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The call did not finish within its deadline; its outcome is unknown."""


def call_with_deadline(fn: Callable[[], T], deadline_seconds: float, what: str = "call") -> T:
    """Run ``fn()`` and return its result, or raise :class:`DeadlineExceeded`
    once ``deadline_seconds`` (wall clock) have passed.

    :param fn: the call; whatever it raises is re-raised here.
    :param deadline_seconds: > 0.
    :param what: names the call in the error.
    :raises DeadlineExceeded: the call is still running at the deadline.
    """
    outcome: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=run, name=f"deadline:{what}", daemon=True)
    thread.start()
    if not done.wait(deadline_seconds):
        raise DeadlineExceeded(f"{what}: no answer within {deadline_seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
