"""Running a simulation and reporting it: the seed first, a progress bar, the
result, and on a failure the history of each payment or funding a violation
names (the events of the failing payment, at least)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
import uuid
from typing import Iterator, Optional

import sqlalchemy as sa

from tests.simulation.engine import Simulation

REFERENCE_RE = re.compile(r"\b(?:[0-9]{12}[0-9a-f]{12}|T[0-9]{8}[0-9a-f]{8}|[A-Za-z0-9_-]{16,40})\b")


@contextlib.contextmanager
def default_database_url(url: Optional[str]) -> Iterator[str]:
    """``url``; else, as the tests choose (``BILLVEND_TEST_BACKEND``): a
    throwaway database on ``TEST_DATABASE_URL``'s PostgreSQL server, or a
    temporary SQLite file."""
    if url:
        yield url
        return
    if os.environ.get("BILLVEND_TEST_BACKEND") == "postgresql":
        from billvend.platform.config import _database_url

        admin_url = sa.engine.make_url(_database_url(os.environ["TEST_DATABASE_URL"]))
        name = f"billvend_sim_{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/sim.sqlite3"


def _bar(done: int, total: int, started: float) -> None:
    width = 40
    filled = int(width * done / max(total, 1))
    rate = done / max(time.monotonic() - started, 1e-9)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} steps, {rate:.0f}/s")
    sys.stderr.flush()


def run_and_report(seed: int, steps: int, database_url: str, *, crash_chance: float = 0.02,
                   progress: bool = False, out=sys.stdout) -> bool:
    """Run one simulation; print what it found. True when no violation."""
    backend = sa.engine.make_url(database_url).get_backend_name()
    print(f"simulation seed={seed} steps={steps} backend={backend}", file=out, flush=True)
    cpu_started = time.process_time()
    sim = Simulation(seed, database_url, crash_chance=crash_chance)
    started = time.monotonic()
    every = max(1, steps // 200)
    tick = (lambda n: _bar(n, steps, started) if n % every == 0 or n == steps else None) if progress else None
    try:
        violations = sim.run(steps, tick)
        if progress:
            sys.stderr.write("\n")
        elapsed = time.monotonic() - started
        counts = sim.counts()
        cpu_seconds = time.process_time() - cpu_started  # building the world included
        print(f"{counts['payments']} payments, {counts['fundings']} fundings, {counts['crashes']} crashes, "
              f"{elapsed:.1f} s ({counts['payments'] / max(elapsed, 1e-9):.1f} payments/s), "
              f"{cpu_seconds:.1f} s CPU", file=out)
        if violations:
            _print_failure(sim, violations, seed, steps, backend, out)
        else:
            print("no violations", file=out)
        return not violations
    finally:
        sim.close()


def _print_failure(sim: Simulation, violations: list[str], seed: int, steps: int, backend: str, out) -> None:
    print(f"\n{len(violations)} VIOLATION(S) at step {sim.step_no}:", file=out)
    for text in violations[:10]:
        print("  - " + text, file=out)
    subjects = {m for text in violations[:10] for m in REFERENCE_RE.findall(text)}
    subjects |= set(sim.references_of(violations[:10]))
    for subject in sorted(subjects):
        lines = [f"    step {step}: {text}" for step, who, text in sim.history if who == subject]
        lines += sim.database_history(subject)
        if lines:
            print(f"\n  history of {subject}:", file=out)
            print("\n".join(lines[-60:]), file=out)
    env = "BILLVEND_TEST_BACKEND=postgresql " if backend == "postgresql" else ""
    print(f"\nreplay: {env}make simulate SEED={seed} STEPS={steps}", file=out)
