"""gunicorn settings that are not sizing (the Procfile's ``web`` line sizes it).

gunicorn loads this file from the working directory by itself. It makes
gunicorn's own log lines JSON like the app's (``billvend.platform.logs``; the app
writes one ``request`` line per request with its request id, so gunicorn's
access log stays off), and tells ``prometheus_client`` when a web process
exits, so multiprocess metrics stop counting it as live
(``PROMETHEUS_MULTIPROC_DIR``, see ``billvend.platform.metrics``).

Slow clients (issue 25): the Procfile runs gevent workers, so an idle or
slow connection costs a greenlet, not one of a few dozen threads. gunicorn's
gevent worker reads each request head under ``gevent.Timeout(keepalive)``
(``--keep-alive 5``): a client that has not sent a whole head within 5 s is
dropped, however slowly it drips lines. Heads are also capped here at 50
header lines of 8 KiB and a 4 KiB request line (gunicorn allows 100 lines);
a browser sends about 15. gunicorn's gevent worker monkey-patches the
standard library in each worker before it imports ``wsgi`` (nothing here
imports ssl or socket), so psycopg 3 waits cooperatively (it checks for a
patched ``select``), and redis, requests and prometheus_client are plain
Python over patched sockets and locks.
"""

limit_request_fields = 50
limit_request_field_size = 8190
limit_request_line = 4094

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "billvend.platform.logs.JsonFormatter"}},
    "filters": {"request_id": {"()": "billvend.platform.logs.RequestIdFilter"}},
    "handlers": {
        "json": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"],
                 "stream": "ext://sys.stderr"},
    },
    # The app adds its own JSON handler to the root logger in each web process.
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}


def child_exit(server, worker):
    from billvend.platform.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def post_request(worker, req, environ, resp):
    # gevent: a greenlet whose keep-alive client has its next request already
    # in the socket buffer reads it without yielding, so a few busy
    # connections can starve the rest of the process's connections (a
    # bimodal latency: p50 1 ms, p75 200 ms, p99 1.2 s for a static file).
    # Yield once per request so every connection gets its turn.
    if "gevent" in type(worker).__module__:
        import gevent

        gevent.sleep(0)
