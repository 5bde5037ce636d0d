"""Prometheus metrics (``GET /metrics``) and the provider call timer.

Two kinds of metric, so that every process's numbers reach one scrape:

* **Measured in the process** (request latency by endpoint, vend / requery /
  verification latency by provider and disco, verification cache hits and
  misses): ``prometheus_client`` histograms and counters. gunicorn runs
  several web processes, and the worker is another process, so set
  ``PROMETHEUS_MULTIPROC_DIR`` (the Procfile's processes on one host share the
  directory; ``make run`` and the load benchmark do) and ``/metrics`` adds up
  every process's files (``prometheus_client`` multiprocess mode). Without
  it, a scrape sees the answering process only.
* **Derived from the database at scrape time** (payments by status, queue
  depth, seconds since each worker's last heartbeat): the same answer from
  any web process, also when the worker runs on another host.

Labels are endpoint names, provider names, disco ``serviceID``s, statuses and
outcomes: never a path, reference, meter number, token or key.

Protection (DESIGN.md: protected in production): with ``METRICS_TOKEN`` set,
a scrape needs ``Authorization: Bearer <METRICS_TOKEN>``; without it, only a
client on the loopback interface that came through no proxy may scrape.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any, Callable, Optional

import sqlalchemy as sa
from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

#: Seconds; fine below a second (pages, the cache) and up to VTpass's timeouts.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0, 60.0)

REQUEST_SECONDS = Histogram(
    "billvend_http_request_duration_seconds",
    "Time to answer a web request, by Flask endpoint, method and status code.",
    ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS)
PROVIDER_CALL_SECONDS = Histogram(
    "billvend_provider_call_duration_seconds",
    "Wall-clock time of one provider call (vend, requery, verify), by provider, disco and outcome.",
    ["call", "provider", "disco", "outcome"], buckets=LATENCY_BUCKETS)
VERIFICATION_LOOKUPS = Counter(
    "billvend_meter_verification_lookups",
    "Meter verifications asked for by web requests: answered from the cache (hit) or by the provider (miss).",
    ["result"])

LOOPBACK = frozenset({"127.0.0.1", "::1"})


def observe_provider_call(call: str, provider: str, disco: Optional[str], outcome: str,
                          seconds: float) -> None:
    """Record one provider call's wall-clock ``seconds`` (``call`` is
    ``vend``, ``requery`` or ``verify``; ``outcome`` the result's status)."""
    PROVIDER_CALL_SECONDS.labels(call, provider, disco or "unknown", outcome).observe(seconds)


class TimedProvider:
    """A provider wrapper that times every call into
    :data:`PROVIDER_CALL_SECONDS`; everything else passes through. The timer
    sits in the provider layer, so the payment state machine and the tasks
    need no metrics code."""

    def __init__(self, inner: Any, disco_of: Optional[Callable[[str], Optional[str]]] = None):
        self._inner = inner
        self.name = getattr(inner, "name", type(inner).__name__)
        # A requery carries only the reference: ``disco_of(reference)`` (vending's
        # lookup, passed in so the platform imports no domain) gives its label.
        self._disco_of = disco_of or (lambda reference: None)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._inner, attribute)

    def _timed(self, call: str, disco: Optional[str], fn, *args, **kwargs):
        started = time.perf_counter()
        outcome = "error"
        try:
            result = fn(*args, **kwargs)
            outcome = getattr(result, "status", "ok")
            return result
        finally:
            observe_provider_call(call, self.name, disco, outcome, time.perf_counter() - started)

    def verify_meter(self, service_id, meter_number, meter_type):
        return self._timed("verify", service_id, self._inner.verify_meter, service_id, meter_number, meter_type)

    def vend(self, request_id, service_id, meter_number, meter_type, amount_kobo, phone):
        return self._timed("vend", service_id, self._inner.vend, request_id, service_id, meter_number,
                           meter_type, amount_kobo, phone)

    def requery(self, request_id, meter_type=None):
        return self._timed("requery", self._disco_of(request_id), self._inner.requery, request_id,
                           meter_type=meter_type)


class DatabaseCollector:
    """Values read from the database when scraped (module docstring)."""

    def collect(self):
        from billvend.platform.extensions import db
        from billvend.platform.heartbeat import as_utc
        from billvend.platform.models import WorkerHeartbeat
        from billvend.platform.queue import huey

        queue = GaugeMetricFamily("billvend_queue_depth", "Tasks waiting in the Huey queue.")
        heartbeat = GaugeMetricFamily(
            "billvend_worker_heartbeat_age_seconds",
            "Seconds since each worker process last reported (database clock).", labels=["worker"])
        try:
            with db.engine.connect() as conn:
                now = conn.scalar(sa.select(sa.func.now()))
                beats = conn.execute(sa.select(WorkerHeartbeat.name, WorkerHeartbeat.seen_at)).all()
        except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
            log.warning("metrics: database unavailable: %s", exc)
            beats, now = [], None
        for collector in SCRAPE_COLLECTORS.values():
            yield from collector.collect()
        for name, seen_at in beats:
            heartbeat.add_metric([name], max(0.0, (as_utc(now) - as_utc(seen_at)).total_seconds()))
        yield heartbeat
        try:
            queue.add_metric([], huey.pending_count())
            yield queue
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: queue unavailable: %s", exc)


#: Per-scrape collectors of the domains (vending: payments by status), by name; the
#: app factory registers them (:func:`register_collector`), so the platform imports none.
SCRAPE_COLLECTORS: dict[str, Any] = {}


def register_collector(name: str, collector: Any) -> None:
    """Add ``collector`` (an object with ``collect()`` yielding metric families) to every
    scrape of ``/metrics``, under ``name`` (registering a name again replaces it)."""
    SCRAPE_COLLECTORS[name] = collector


def _authorised() -> bool:
    token = current_app.config["METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    return request.remote_addr in LOOPBACK and "X-Forwarded-For" not in request.headers


def metrics_view() -> Response:
    """``GET /metrics``: the Prometheus text format. 401 without the bearer
    token when ``METRICS_TOKEN`` is set; 404 for a non-loopback client
    otherwise (an unconfigured production app shows nothing)."""
    if not _authorised():
        if current_app.config["METRICS_TOKEN"]:
            return Response("metrics need a bearer token\n", 401, {"WWW-Authenticate": "Bearer"},
                            mimetype="text/plain")
        abort(404)
    registry = CollectorRegistry()
    if current_app.config["PROMETHEUS_MULTIPROC_DIR"]:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry = _SingleProcess(registry)
    registry.register(DatabaseCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _SingleProcess(CollectorRegistry):
    """This process's default registry plus the per-scrape collectors."""

    def __init__(self, extra: CollectorRegistry):
        super().__init__(auto_describe=False)
        self._extra = extra

    def collect(self):
        yield from REGISTRY.collect()
        yield from super().collect()


def init_app(app: Flask) -> None:
    """Time every request by endpoint and serve ``/metrics``."""

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            endpoint = request.endpoint or "unmatched"
            REQUEST_SECONDS.labels(endpoint, request.method, str(response.status_code)).observe(
                time.perf_counter() - started)
        return response

    app.add_url_rule("/metrics", "metrics", metrics_view)


def mark_process_dead(pid: int) -> None:
    """Tell multiprocess mode that web process ``pid`` exited (gunicorn's
    ``child_exit`` hook); nothing to do without ``PROMETHEUS_MULTIPROC_DIR``."""
    from billvend.platform.config import from_env

    if from_env()["PROMETHEUS_MULTIPROC_DIR"]:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
