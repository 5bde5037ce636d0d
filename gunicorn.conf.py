"""gunicorn settings that are not sizing (the Procfile's ``web`` line sizes it).

gunicorn loads this file from the working directory by itself. It makes
gunicorn's own log lines JSON like the app's (``billvend.platform.logs``; the app
writes one ``request`` line per request with its request id, so gunicorn's
access log stays off), and tells ``prometheus_client`` when a web process
exits, so multiprocess metrics stop counting it as live
(``PROMETHEUS_MULTIPROC_DIR``, see ``billvend.platform.metrics``).
"""

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
