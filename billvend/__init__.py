"""billvend: fund a wallet, buy electricity tokens from Nigerian discos."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

import sqlalchemy as sa
from flask import Flask, flash, redirect, render_template, request, url_for
from sqlalchemy.engine import Engine

from billvend.platform.config import (
    INSTANCE_DIR, PROJECT_ROOT, check_production, check_timings, config_cli, from_env, resolve_secret_key,
)
from billvend.platform.extensions import csrf, db, login_manager, migrate
from billvend.platform.queue import init_huey

log = logging.getLogger(__name__)


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """The application factory.

    :param config: overrides applied on top of the environment's config
        (``billvend.platform.config.from_env``); tests pass their database URL here.
    :raises billvend.platform.config.ConfigError: an unsafe configuration (no strong
        SECRET_KEY where one is required; a stand-in in production).
    """
    app = Flask(
        __name__,
        instance_path=str(INSTANCE_DIR),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(from_env())
    if config:
        app.config.update(config)
    check_timings(app.config)
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    resolve_secret_key(app.config)
    check_production(app.config)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "info"
    login_manager.refresh_view = "account.confirm_password"
    login_manager.needs_refresh_message = "Please confirm your password to continue."
    login_manager.needs_refresh_message_category = "info"
    # Sessions are server-side records (billvend.accounts.sessions): revocable, new
    # at every login, ended at logout. Flask-Login's IP/user-agent check
    # would only sign phones out as they change networks.
    login_manager.session_protection = None
    # "Keep me signed in" is billvend.accounts.sessions' per-device token, turned into
    # a session before Flask-Login looks; Flask-Login's own remember cookie
    # (user id + HMAC of the SECRET_KEY, never revocable) is never accepted.
    login_manager._load_user_from_remember_cookie = lambda cookie: None  # noqa: SLF001
    csrf.init_app(app)
    init_huey(app)
    app.cli.add_command(config_cli)  # flask config docs

    from billvend.platform import logs, metrics, worker
    from billvend.platform.queue import huey
    # Each domain registers its tables, Huey tasks and ledger invariants when imported,
    # and the platform and the ledger import no domain: the app factory imports them all
    # (vending first: `flask ledger check` lists the invariants in registration order).
    from billvend.vending import invariants as _vending_invariants, tasks, telemetry  # noqa: F401
    from billvend.funding import invariants as _funding_invariants, tasks as _funding_tasks  # noqa: F401
    from billvend.transfers import invariants as _transfer_invariants  # noqa: F401
    from billvend.adjustments import invariants as _adjustment_invariants  # noqa: F401
    from billvend.notifications import email as notification_email, tasks as _notification_tasks
    from billvend.notifications import sms as _sms_sender  # noqa: F401  (registers "sms")
    from billvend.vending.models import Payment

    huey.consumer_class = worker.Consumer  # huey_consumer wsgi.huey builds it

    def clock_task() -> None:  # what the consumer's clock enqueues below a minute
        tasks.sweep()
        _notification_tasks.message_sweep()

    huey.clock_task = clock_task
    notification_email.init_app(app)  # Flask-Mailman on SMTP_URL, the "email" sender
    from billvend.notifications.cli import messages_cli
    app.cli.add_command(messages_cli)  # flask messages send-test
    logs.configure(app)
    logs.install(huey, stamped=(Payment,), request_id_of_task=telemetry.request_id_of_task)
    metrics.init_app(app)
    metrics.register_collector("payments", telemetry.PaymentsCollector())
    from billvend.web.account import bp as account_bp
    from billvend.web.admin import bp as admin_bp
    from billvend.web.auth import bp as auth_bp
    from billvend.web.bills import bp as bills_bp
    from billvend.web.history import bp as history_bp
    from billvend.web.main import bp as main_bp
    from billvend.web.meters import bp as meters_bp
    from billvend.web.wallet import bp as wallet_bp
    from billvend.web.webhooks import bp as webhooks_bp

    for blueprint in (main_bp, auth_bp, account_bp, wallet_bp, bills_bp, history_bp, meters_bp, admin_bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(webhooks_bp)

    from billvend.web import security

    security.init_app(app)

    _register_template_helpers(app)
    _register_error_handlers(app)
    from billvend.web.cli import register_cli

    register_cli(app)
    return app


@sa.event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    """SQLite: enforce foreign keys; WAL so the web and worker processes can
    read while the other writes; wait for a lock instead of failing."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()


def _register_template_helpers(app: Flask) -> None:
    from billvend.platform.money import format_naira
    from billvend.vending.providers import DISCOS

    app.add_template_filter(format_naira, "naira")
    from billvend.web.useragents import device_name

    app.add_template_filter(device_name, "device_name")
    from billvend.platform.phones import display as phone_display

    app.add_template_filter(phone_display, "phone")

    @app.template_filter("customer_reason")
    def customer_reason(payment):
        from billvend.vending.lifecycle import customer_reason as reason

        return reason(payment) or ""

    @app.template_filter("lagos_time")
    def lagos_time(value, fmt="%d %b %Y, %H:%M"):
        from billvend.vending.lifecycle import LAGOS

        return value.astimezone(LAGOS).strftime(fmt) if value else ""

    @app.context_processor
    def inject_globals():
        return {
            "htmx_url": app.config["HTMX_URL"],
            "htmx_sri": app.config["HTMX_SRI"],
            "discos": DISCOS,
        }


def _register_error_handlers(app: Flask) -> None:
    from flask_wtf.csrf import CSRFError
    from sqlalchemy.orm.exc import StaleDataError

    @app.errorhandler(404)
    def not_found(error):
        return render_template("errors/404.html"), 404

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        from flask_login import current_user

        from billvend.web.security import referrer_path

        if not current_user.is_authenticated and request.endpoint not in ("auth.login", "auth.signup"):
            # The session ended (idle deadline, "log out everywhere", a
            # logout in another tab) and took its CSRF secret along: nothing
            # was done; send the customer to sign in again, then back.
            if request.endpoint == "auth.logout":
                flash("You are signed out.", "info")
                return redirect(url_for("auth.login"), code=303)
            flash("Your session ended, so nothing was done. Please sign in again.", "warning")
            return redirect(url_for("auth.login", next=referrer_path()), code=303)
        return render_template("errors/400.html", reason=error.description), 400

    @app.errorhandler(sa.exc.DataError)
    @app.errorhandler(OverflowError)
    def unrepresentable_input(error):
        # A value the database cannot hold or compare (a NUL byte, an integer
        # beyond 64 bits in a URL): the request is bad, not the server, and
        # nothing was written.
        log.warning("unrepresentable input on %s %s: %s", request.method, request.path, error)
        db.session.rollback()
        return render_template("errors/400.html", reason="That request has a value we cannot use."), 400

    @app.errorhandler(sa.exc.OperationalError)
    @app.errorhandler(sa.exc.TimeoutError)  # no pooled connection free within pool_timeout
    @app.errorhandler(StaleDataError)
    def database_unavailable(error):
        # The database is down or unreachable, or a transaction kept losing a
        # race (deadlock, serialization failure, stale version) after
        # transactions.unit_of_work's retries: say so plainly, never a 500; nothing
        # was committed, so nothing was debited.
        log.error("database unavailable on %s %s: %s", request.method, request.path, error)
        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone too
            pass
        # Straight from the Jinja environment: render_template would run the
        # context processors, and Flask-Login's loads current_user from the
        # database that is down, turning this page into a 500.
        return app.jinja_env.get_template("errors/503.html").render(), 503

    @app.errorhandler(500)
    def server_error(error):
        db.session.rollback()
        return render_template("errors/500.html"), 500
