"""The task queue: the module-level ``Huey`` object and its binding to an app.

Tasks are registered on one module-level ``Huey`` object at import time, so
``init_huey`` re-points that object's storage at whatever the app's config
says (Redis when ``REDIS_URL`` is set, the SQLite file otherwise, memory in
immediate mode) and remembers the app so tasks can push its context.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from flask import Flask
from huey import Huey
from huey.storage import RedisStorage, SqliteStorage
from redis import ConnectionPool


class BillvendHuey(Huey):
    """``Huey`` whose consumer is ``consumer_class`` (the app factory sets
    :class:`billvend.platform.worker.Consumer`; the queue knows nothing of the worker).

    ``huey_consumer wsgi.huey`` builds its consumer through
    ``create_consumer``, so the Procfile's stock command gets our sweep clock
    and signal handling without a custom entry point. ``clock_task`` is the
    task the consumer's clock enqueues (vending's sweep, also set by the app
    factory).
    """

    consumer_class = None
    clock_task = None

    def create_consumer(self, **options):
        if self.consumer_class is None:
            return super().create_consumer(**options)
        return self.consumer_class(self, **options)


# Storage is replaced by init_huey; immediate memory storage until then keeps
# importing the tasks free of side effects (no file, no Redis connection).
huey = BillvendHuey("billvend", immediate=True)

# A Redis that is down refuses at once; one that is unreachable (a network
# partition) must not hang a web request either: the enqueue gives up and the
# sweep vends the payment later. socket_timeout stays above the consumer's
# 1 s blocking read.
REDIS_CONNECT_TIMEOUT_SECONDS = 2
REDIS_SOCKET_TIMEOUT_SECONDS = 5

_huey_app: Flask | None = None


def init_huey(app: Flask) -> None:
    """Bind the module-level ``huey`` to ``app``'s queue configuration.

    ``REDIS_URL`` selects ``RedisStorage``; otherwise a ``SqliteStorage`` file
    at ``HUEY_SQLITE_PATH``. ``HUEY_IMMEDIATE`` runs tasks inline (tests).
    """
    global _huey_app
    _huey_app = app
    name = app.config["HUEY_NAME"]
    huey.name = name
    huey.utc = True
    if app.config["HUEY_IMMEDIATE"]:
        huey.immediate_use_memory = True
        huey._immediate = True  # noqa: SLF001 - set without the setter's storage swap
        huey.storage = huey.get_immediate_storage()
        return
    huey._immediate = False  # noqa: SLF001
    if app.config["REDIS_URL"]:
        pool = ConnectionPool.from_url(
            app.config["REDIS_URL"],
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        )
        huey.storage = RedisStorage(name, connection_pool=pool)
    else:
        path = Path(app.config["HUEY_SQLITE_PATH"])
        path.parent.mkdir(parents=True, exist_ok=True)
        huey.storage = SqliteStorage(name, filename=str(path))


def huey_app() -> Flask:
    """The app whose context Huey tasks run in.

    :raises RuntimeError: if no app was created in this process yet.
    """
    if _huey_app is None:
        raise RuntimeError("create_app() has not run in this process")
    return _huey_app


def in_app_context(func: Callable) -> Callable:
    """Run a task body inside the app context of the process's app."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with huey_app().app_context():
            return func(*args, **kwargs)

    return wrapper
