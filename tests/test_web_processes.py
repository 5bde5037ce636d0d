"""The Procfile's ``web`` (gunicorn, gevent workers) against slow clients,
and the worker's heartbeat, on the real processes."""

from __future__ import annotations

import concurrent.futures
import socket
import time

import pytest
import requests
import sqlalchemy as sa

from tests.stack import SlowClients, Stack


@pytest.fixture
def stack(tmp_path):
    with Stack(tmp_path) as running:
        running.migrate()
        running.start("web")
        yield running


def slow_body(port: int) -> socket.socket:
    """A connection that sends its headers and half a body, then stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
                 b"email=slow")
    return sock


@pytest.mark.once
def test_slow_bodies_do_not_hold_up_other_requests(stack):
    # Two per web process (WEB_CONCURRENCY=2): with sync workers this blocked
    # /healthz for the whole 30 s worker timeout.
    stalled = [slow_body(stack.port) for _ in range(4)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        for _ in range(5):
            assert requests.get(stack.base_url + "/healthz", timeout=10).status_code == 200
        # Generous: five answers take milliseconds; a blocked server holds
        # them for its 30 s worker timeout (each GET gives up after 10 s).
        assert time.monotonic() - started < 10
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.once
def test_200_slow_clients_do_not_stall_normal_requests(stack):
    # A slowloris: 200 connections each sending one header line every 5 s.
    # With gthread (2 x 32 threads) each held a thread for minutes and
    # normal requests timed out; now each costs a greenlet until the 5 s
    # deadline on reading a request head drops it.
    with SlowClients(stack.port, count=200, interval_seconds=5) as slow:
        time.sleep(6)  # every slow connection is in the middle of its head
        assert slow.opened >= 200

        def normal(path: str) -> int:
            return requests.get(stack.base_url + path, timeout=15).status_code

        paths = ["/healthz", "/login", "/static/js/app.js", "/"] * 5
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(normal, paths))
    assert statuses == [200] * len(paths)


@pytest.mark.once
def test_worker_reports_a_heartbeat(stack, tmp_path):
    stack.start("worker")
    engine = sa.create_engine(stack.env["DATABASE_URL"])
    deadline = time.monotonic() + 30
    rows = []
    while time.monotonic() < deadline and not rows:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT name, concurrency FROM worker_heartbeats")).all()
        time.sleep(0.3)
    engine.dispose()
    assert rows and rows[0][1] == 64  # WORKER_CONCURRENCY's default


# A gevent process in miniature: a greenlet ticks every millisecond while
# one password is hashed; it prints how many ticks got through.
_HASH_WHILE_TICKING = """
from gevent import monkey; monkey.patch_all()
import gevent, sys
from werkzeug.security import generate_password_hash
from billvend.platform.blocking import off_the_loop
ticks = 0
def tick():
    global ticks
    while True:
        gevent.sleep(0.001)
        ticks += 1
ticker = gevent.spawn(tick)
gevent.sleep(0.01)
before = ticks
if sys.argv[1] == "offloaded":
    off_the_loop(generate_password_hash, "correct horse battery staple")
else:
    generate_password_hash("correct horse battery staple")
print(ticks - before)
"""


def ticks_while_hashing(how: str) -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _HASH_WHILE_TICKING, how],
                          capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def test_a_password_hash_does_not_stop_a_gevent_process():
    # scrypt holds the only OS thread of a gevent web process for tens of
    # milliseconds: done in place, no other connection is served meanwhile.
    assert ticks_while_hashing("in-place") == 0
    assert ticks_while_hashing("offloaded") > 0
