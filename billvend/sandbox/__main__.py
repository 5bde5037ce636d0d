"""``python -m billvend.sandbox [--host H] [--port P]``: run the VTpass sandbox.

By default it listens where ``SANDBOX_URL`` points (``127.0.0.1:5055``),
where ``VTPASS_BASE_URL`` and ``PAYSTACK_BASE_URL`` default to, so billvend
finds it with no further setting; pointing either elsewhere leaves it there. One
process, many threads: the order book is in memory, kept in
``SANDBOX_STATE_PATH`` (``instance/sandbox-state.json``) across restarts;
SIGTERM (honcho's stop) and Ctrl-C both write it before exiting.
"""

from __future__ import annotations

import argparse
import signal
import sys
from urllib.parse import urlsplit

from werkzeug.serving import run_simple

from billvend.platform.config import ConfigError
from billvend.sandbox import create_app


def main(argv: list[str] | None = None) -> None:
    try:
        app = create_app()
    except ConfigError as error:
        raise SystemExit(f"billvend sandbox: refusing to start: {error}") from None
    where = urlsplit(app.config["SANDBOX_URL"])
    parser = argparse.ArgumentParser(prog="python -m billvend.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=where.hostname or "127.0.0.1")
    parser.add_argument("--port", type=int, default=where.port or 5055)
    args = parser.parse_args(argv)
    print(f" * VTpass + Paystack sandbox on http://{args.host}:{args.port} "
          f"(timeout meter sleeps {app.extensions['vtpass_sandbox'].timeout_sleep_seconds:g} s)", flush=True)
    # SIGTERM ends the process through SystemExit, so atexit writes the state file.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
