"""The sandbox's state on disk: one JSON file (``SANDBOX_STATE_PATH``,
``instance/sandbox-state.json`` by default), so a restart of ``make run``
keeps the customers' dedicated accounts, open checkouts and VTpass orders
(issue 20, item 7).

Writes are behind the requests, never in them: a change marks the state
dirty and a timer writes the whole state at most every
:data:`WRITE_INTERVAL_SECONDS`, to a temporary file renamed over the old one
(a crash mid-write leaves the previous file whole). The process writes once
more at exit. So a restart by Ctrl-C keeps everything, a crash loses at most
the last moment. One process owns a file (the sandbox runs as ONE process).
Time-based fields (a checkout's age, a late-record order's visibility) are
stored as wall-clock times and turned back into ``time.monotonic()``
deadlines when loaded.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

#: Longest a change waits before it is written (seconds).
WRITE_INTERVAL_SECONDS = 0.2
FORMAT_VERSION = 1
#: ``SANDBOX_STATE_PATH`` values meaning "keep nothing on disk".
IN_MEMORY = frozenset({"none", "memory", "off"})


def wall_to_monotonic(wall_seconds: float) -> float:
    """A ``time.time()`` instant as the ``time.monotonic()`` reading of it."""
    return time.monotonic() - (time.time() - wall_seconds)


def monotonic_to_wall(monotonic_seconds: float) -> float:
    """A ``time.monotonic()`` reading as a ``time.time()`` instant."""
    return time.time() - (time.monotonic() - monotonic_seconds)


def load(path: Path) -> Optional[dict[str, Any]]:
    """The saved state at ``path``; None if there is none or it cannot be
    read (then the sandbox starts empty, and says so in its log)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("sandbox state %s is unreadable (%s): starting empty", path, exc)
        return None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        log.warning("sandbox state %s has an unknown format: starting empty", path)
        return None
    return data


class StateFile:
    """Writes ``dump()`` (a JSON-able dict, read under the states' own
    locks) to ``path`` soon after :meth:`mark_dirty`.

    :param path: the file; its directory is created if missing.
    :param dump: returns the whole state.
    """

    def __init__(self, path: Path, dump: Callable[[], dict[str, Any]],
                 interval_seconds: float = WRITE_INTERVAL_SECONDS):
        self.path = path
        self.dump = dump
        self.interval_seconds = interval_seconds
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._dirty = False
        self._timer: Optional[threading.Timer] = None
        atexit.register(self.flush)

    def mark_dirty(self) -> None:
        """Something changed: write it within ``interval_seconds``."""
        with self._lock:
            self._dirty = True
            if self._timer is None:
                self._timer = threading.Timer(self.interval_seconds, self._timer_fired)
                self._timer.daemon = True
                self._timer.start()

    def _timer_fired(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - a full disk must not kill the sandbox
            log.exception("could not write the sandbox state to %s", self.path)

    def flush(self) -> None:
        """Write the state now if anything changed since the last write.

        :raises OSError: the file could not be written.
        """
        with self._write_lock:
            with self._lock:
                if not self._dirty:
                    return
                self._dirty = False
            data = {"version": FORMAT_VERSION, **self.dump()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(data, out, separators=(",", ":"))
                os.replace(tmp, self.path)
            except BaseException:
                with self._lock:
                    self._dirty = True
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
