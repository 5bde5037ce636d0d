"""``python -m tests.simulation [--seed N] [--steps N] [--database-url URL]``
(``make simulate SEED=… STEPS=…``): one seeded run; prints the seed, a progress
bar, the counts, and on a failure the violations with the events of the payments
and fundings they name. Exit status 1 on a violation."""

from __future__ import annotations

import argparse
import random
import sys

from tests.simulation.report import default_database_url, run_and_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation")
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh random seed")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--database-url", default=None,
                        help="default: a temporary SQLite file, or TEST_DATABASE_URL's server when "
                             "BILLVEND_TEST_BACKEND=postgresql (a throwaway database)")
    parser.add_argument("--crash-chance", type=float, default=0.02)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with default_database_url(args.database_url) as url:
        ok = run_and_report(seed, args.steps, url, crash_chance=args.crash_chance, progress=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
