"""Private PostgreSQL and Redis servers for fault tests, and a real SMTP
server (aiosmtpd) in the test process for the outbox's tests.

A fault test stops and restarts its servers, which must never disturb the
shared ones other test runs use at 5432 and 6379. Each server here runs on a
free port from a temporary directory and is removed afterwards. PostgreSQL's
``initdb`` refuses to run as root, so as root the cluster is run as the
``postgres`` user.
"""

from __future__ import annotations

import email
import email.policy
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import redis
from aiosmtpd.controller import Controller

from tests.stack import free_port


class ServerMissing(RuntimeError):
    """A server binary this test needs is not installed."""


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` that has ``initdb``.

    :raises ServerMissing: if PostgreSQL's server binaries are not installed.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(path.split("/")[4]))
    if not found:
        if shutil.which("initdb"):
            return Path(shutil.which("initdb")).parent
        raise ServerMissing("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:``port`` (trust auth)."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="billvend-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", timeout=120)
        self.start()

    @property
    def url(self) -> str:
        """The admin URL (database ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(self._as_postgres + [str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=timeout, cwd=self.dir)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=100 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                  "-w", "-t", "60", "start", timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` disconnects every client, as a restart does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"),
                                  isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A throwaway ``redis-server`` on 127.0.0.1:``port``, no persistence:
    stopping it loses every queued and scheduled task, as a crash would."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise ServerMissing("redis-server is not installed")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="billvend-redis-"))
        self.process: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_seconds: float = 20) -> None:
        log = open(self.dir / "redis.log", "a")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.1)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        """Stop the server (SIGKILL: no goodbye to clients, nothing saved)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=20)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Inbox:
    """An aiosmtpd handler keeping every message it accepts; refuses the
    addresses in ``refuse`` with 550 at RCPT."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def to(self) -> list[str]:
        return [str(m["To"]) for m in self.messages]


class MailServer:
    """aiosmtpd on a fixed port, which can be stopped and started again (or
    replaced by a server that never answers) while the app keeps its SMTP_URL."""

    def __init__(self):
        self.port = free_port()
        self.inbox = Inbox()
        self.controller = None

    def start(self):
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
