"""Run billvend's real processes for end-to-end, fault and browser tests.

The commands come from the ``Procfile`` itself (``$PORT`` and friends
expanded by a shell, as honcho and Heroku do), so these tests exercise what a
deployment runs. Each process gets its own session, so a test can kill one
(SIGKILL a worker mid-vend) and start it again.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_commands() -> dict[str, str]:
    """``{process type: command}`` from the Procfile."""
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            commands[name.strip()] = command.strip()
    return commands


class Stack:
    """The processes of one billvend deployment, on a private database.

    :param tmp_path: where the SQLite files and logs go.
    :param env: extra environment (``DATABASE_URL``, ``REDIS_URL``,
        ``SIMULATOR_*``...). Defaults: SQLite + SqliteHuey in ``tmp_path``,
        simulator delay 0, the local htmx copy.
    """

    def __init__(self, tmp_path: Path, env: Optional[dict[str, str]] = None):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        base.update({
            "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'stack.sqlite3'}",
            "HUEY_SQLITE_PATH": str(tmp_path / "huey.sqlite3"),
            "SIMULATOR_DELAY_SECONDS": "0",
            # The simulator answers at once, so a pay is in flight for
            # milliseconds: believe its "never received" a second later
            # (production waits 120 s) so a refund is seen within a test.
            "PROVIDER_NOT_FOUND_GRACE_SECONDS": "1",
            # Instant in-process card approvals unless a test runs the
            # Paystack sandbox (env FUNDING_GATEWAY=paystack + PAYSTACK_*).
            "FUNDING_GATEWAY": "simulated",
            # A DATABASE_URL makes the app require a strong key.
            "SECRET_KEY": secrets.token_hex(32),
            # The browser and process tests sign up and log in many times
            # from 127.0.0.1; tests of the limits set strict ones.
            **{name: "100000 per minute" for name in (
                "RATELIMIT_LOGIN_ACCOUNT_IP", "RATELIMIT_LOGIN_IP", "RATELIMIT_LOGIN_ACCOUNT",
                "RATELIMIT_SIGNUP_IP", "RATELIMIT_VERIFY_USER", "RATELIMIT_VERIFY_IP",
                "RATELIMIT_VERIFY_DISTINCT_METERS", "RATELIMIT_PAYMENT_USER",
                "RATELIMIT_FUNDING_USER", "RATELIMIT_TWO_FACTOR", "RATELIMIT_WEBHOOK_IP",
                "RATELIMIT_PASSWORD_RESET_EMAIL", "RATELIMIT_PASSWORD_RESET_IP",
                "RATELIMIT_EMAIL_VERIFICATION_USER")},
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "HTMX_URL": "/static/vendor/htmx.min.js",
            "PYTHONUNBUFFERED": "1",
        })
        base.update(env or {})
        self.env = base
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, object] = {}

    def migrate(self) -> None:
        """``flask db upgrade``, as the Procfile's ``release`` does."""
        subprocess.run(procfile_commands()["release"], shell=True, cwd=ROOT, env=self.env,
                       check=True, capture_output=True, timeout=120)

    def start(self, name: str) -> subprocess.Popen:
        """Start the Procfile process ``name`` (``web`` or ``worker``)."""
        log = open(self.tmp_path / f"{name}.log", "a+")
        proc = subprocess.Popen(["/bin/sh", "-c", "exec " + procfile_commands()[name]], cwd=ROOT,
                                env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.processes[name], self._logs[name] = proc, log
        if name == "web":
            self.wait_healthy()
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_seconds: float = 20) -> None:
        """Send ``sig`` to a process's whole group and wait for it to exit."""
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._logs.pop(name).close()

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def wait_healthy(self, timeout_seconds: float = 30) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.processes["web"].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("web did not become healthy:\n" + self.log("web"))

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SlowClients:
    """``count`` connections that each send a request head one line at a
    time, a line every ``interval_seconds`` (a slowloris attack), until
    :meth:`close`. A connection the server closes is opened again, so
    ``count`` stay open for as long as the server lets them.

    :param port: the server's port on 127.0.0.1.
    """

    def __init__(self, port: int, count: int = 200, interval_seconds: float = 5.0):
        self.port, self.count, self.interval_seconds = port, count, interval_seconds
        self.opened = 0
        self.dropped = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        for _ in range(count):
            self._socks.append(self._open())
        self._thread = threading.Thread(target=self._drip, name="slow-clients", daemon=True)
        self._thread.start()

    def _open(self) -> Optional[socket.socket]:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError:
            return None
        self.opened += 1
        return sock

    def _drip(self) -> None:
        line = 0
        while not self._stop.wait(self.interval_seconds):
            line += 1
            for i, sock in enumerate(self._socks):
                if self._stop.is_set():
                    return
                try:
                    if sock is None:
                        raise OSError("not connected")
                    sock.sendall(f"X-Slow-{line}: {'a' * 20}\r\n".encode())
                except OSError:
                    self.dropped += 1
                    if sock is not None:
                        sock.close()
                    self._socks[i] = self._open()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for sock in self._socks:
            if sock is not None:
                sock.close()

    def __enter__(self) -> "SlowClients":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
