"""WSGI entry point: ``gunicorn wsgi:app``; ``huey_consumer wsgi.huey`` for the worker."""

from billvend import create_app
from billvend.queue import huey  # noqa: F401 - the consumer imports it from here

app = create_app()
