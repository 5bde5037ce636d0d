"""CPU-bound work that must not stall a gevent web process.

The Procfile's web processes run gunicorn's gevent workers (issue 25,
gunicorn.conf.py): every connection of a process shares one OS thread, so
a call that holds that thread holds every customer of the process. A
password hash is such a call: werkzeug's scrypt (``hashlib.scrypt``, 32 MiB,
tens of milliseconds) would stop the process for each login, signup or
reset. OpenSSL's scrypt releases the GIL, so on a native thread it runs
beside the event loop instead.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


def gevent_patched() -> bool:
    """True in a process whose standard library gevent has monkey-patched
    (gunicorn's gevent worker does it before importing the app)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


def off_the_loop(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """``fn(*args, **kwargs)``, on gevent's pool of native threads when
    :func:`gevent_patched` (the calling greenlet waits, the others go on),
    directly otherwise (threads, the Huey worker, tests). Exceptions raised
    by ``fn`` propagate unchanged. ``fn`` gains only if it releases the GIL
    (C code such as ``hashlib.scrypt``); it must not touch the database
    session or the request, which belong to the calling greenlet."""
    if gevent_patched():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args, kwargs)
    return fn(*args, **kwargs)
