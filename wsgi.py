"""WSGI entry point: ``gunicorn wsgi:app``; ``huey_consumer wsgi.huey`` for the worker."""

from billvend import create_app
from billvend.platform.config import ConfigError
from billvend.platform.queue import huey  # noqa: F401 - the consumer imports it from here

try:
    app = create_app()
except ConfigError as error:
    # One line saying what to change, not a traceback; exit status 1.
    raise SystemExit(f"billvend: refusing to start: {error}") from None
