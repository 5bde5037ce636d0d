"""The simulated queue and crashes.

Huey's ``enqueue`` is replaced by :meth:`SimQueue.enqueue`: every task billvend
queues (a vend after commit, a requery with its delay, a webhook's processing, a
message send) lands here, and the engine runs the bodies when it picks them, in
a seeded order, dropping some (a worker killed between dequeue and ack, an
enqueue lost after commit) and running some twice.

Crashes (:class:`Crashes`): at every commit of a unit of work while armed, a
seeded chance that the process dies, either before the commit (the unit rolls
back) or just after it (the unit committed; whatever the process would have
done next, its follow-up enqueue included, is lost).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tests.simulation.world import SimClock, SimCrash


@dataclass(order=True)
class Queued:
    ready_at: datetime
    seq: int
    task: Any = field(compare=False)

    @property
    def label(self) -> str:
        return f"{self.task.name}{tuple(self.task.args or ())}"


class SimQueue:
    """Waiting tasks, kept sorted by the key a pick orders the ready ones by
    (ready time, task name, arguments, arrival): the ready tasks are then a
    prefix of ``items``, found by bisection, so a pick costs no scan and no
    sort of a backlog that grows with the run (thousands of tasks in a long
    one). The order, and so each seeded pick, is the one a sort of the ready
    tasks gives."""

    def __init__(self, rng: random.Random, clock: SimClock) -> None:
        self.rng, self.clock = rng, clock
        self.items: list[tuple] = []  # (ready_at, name, sort_key(args), seq, Queued), sorted
        self.seq = 0
        self.keys: set[tuple] = set()
        self.crashes = None  # set by the engine: a dead process enqueues nothing

    def enqueue(self, task) -> None:
        if self.crashes is not None:
            self.crashes.check()
        ready_at = self.clock.now()
        if task.eta is not None:
            # Huey computed the eta on the simulated clock (sim_normalize_time).
            ready_at = max(ready_at, task.eta if task.eta.tzinfo else task.eta.replace(tzinfo=timezone.utc))
        key = (task.name, repr(task.args), repr(task.kwargs))
        if key in self.keys:
            # The same task is already waiting (the sweep re-drives what the
            # queue holds): one copy is enough; "run twice" is its own fault.
            return
        self.keys.add(key)
        self.seq += 1
        # In an order that does not depend on the database's row order (the
        # sweep's lists have none), so a replay on PostgreSQL picks the same:
        # by the arguments' values (row ids), compared as numbers. Their text
        # would not do: PostgreSQL's sequences skip the ids of rolled-back
        # inserts (a crash before a commit), SQLite reuses them, so the ids
        # differ by backend while their order does not, and "10" < "9" as
        # text. seq is unique, so the comparison never reaches the Queued.
        bisect.insort(self.items, (ready_at, task.name, sort_key(task.args), self.seq,
                                   Queued(ready_at, self.seq, task)))

    def _ready_count(self) -> int:
        # Every key with ready_at <= now sorts before (now, <above any name>).
        return bisect.bisect_right(self.items, (self.clock.now(), _ABOVE))

    def ready(self) -> list[Queued]:
        return [entry[-1] for entry in self.items[:self._ready_count()]]

    def has_ready(self) -> bool:
        """Whether a task is ready: one bisection, not a copy of the ready
        ones (the finish asks before each of thousands of tasks)."""
        return self._ready_count() > 0

    def take(self) -> Queued | None:
        """A seeded pick among the ready tasks (interleaving them)."""
        count = self._ready_count()
        if not count:
            return None
        # rng.choice(range(n)) draws exactly as rng.choice of an n-long list.
        entry = self.items.pop(self.rng.choice(range(count)))
        item = entry[-1]
        self.keys.discard((item.task.name, repr(item.task.args), repr(item.task.kwargs)))
        return item


def sort_key(args) -> tuple:
    """A task's arguments as a comparable tuple: lists become tuples, so
    ``send_messages([12, 13])`` orders by its ids as numbers; None sorts
    first."""
    return tuple(sort_key(arg) if isinstance(arg, (list, tuple)) else
                 ((0,) if arg is None else (1, arg)) for arg in (args or ()))


class _Above:
    """Compares above every task name (a bisection bound)."""

    def __lt__(self, other) -> bool:
        return False

    def __gt__(self, other) -> bool:
        return True


_ABOVE = _Above()


def sim_normalize_time(clock: SimClock):
    """``huey.api.normalize_time`` on the simulated clock: a task scheduled with
    ``delay`` seconds is due that long after the simulated now (naive UTC, as
    Huey's own with ``utc=True``), never by the host's clock."""

    def normalize_time(eta=None, delay=None, utc=True):
        if delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            return clock.now().replace(tzinfo=None) + timedelta(seconds=seconds)
        return eta if eta.tzinfo is None else eta.astimezone(timezone.utc).replace(tzinfo=None)

    return normalize_time


class Crashes:
    """Seeded deaths at commit boundaries, on every session, while armed."""

    def __init__(self, rng: random.Random, chance: float) -> None:
        self.rng, self.chance = rng, chance
        self.armed = False
        self.count = 0
        self.after = False  # die just after the commit in progress
        self.dead = False  # died after a commit: the next thing the process does fails
        sa.event.listen(Session, "before_commit", self._before)
        sa.event.listen(Session, "after_commit", self._after)
        sa.event.listen(Engine, "before_execute", self._next_statement)

    def remove(self) -> None:
        sa.event.remove(Session, "before_commit", self._before)
        sa.event.remove(Session, "after_commit", self._after)
        sa.event.remove(Engine, "before_execute", self._next_statement)

    def reset(self) -> None:
        self.armed = self.after = self.dead = False

    def check(self) -> None:
        """Called by everything the process does next (a statement, an
        enqueue, an outside call): a dead process does nothing more."""
        if self.dead:
            raise SimCrash("died just after a commit (its follow-up is lost)")

    def _next_statement(self, *args) -> None:
        self.check()

    def _before(self, session) -> None:
        if not self.armed or self.rng.random() >= self.chance:
            return
        self.count += 1
        if self.rng.random() < 0.5:
            self.armed = False
            raise SimCrash("died before a commit (the unit rolls back)")
        self.after = True

    def _after(self, session) -> None:
        # Raising inside after_commit would leave the session unusable; the
        # death shows at the process's next act instead (check()).
        if self.after:
            self.after = False
            self.armed = False
            self.dead = True
