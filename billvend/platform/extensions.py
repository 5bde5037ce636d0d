"""Unbound extensions, bound to an app in ``create_app`` (the ``init_app`` pattern).

Only the extensions themselves live here. The task queue (the module-level
``Huey`` object and its binding to an app) is ``billvend.platform.queue``; the worker
process is ``billvend.platform.worker``.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_talisman import Talisman
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    # Stable constraint names, so Alembic autogenerate and SQLite batch
    # migrations can address them.
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
#: Rate limits (billvend.web.security): storage, strategy and every limit come
#: from the app's config (RATELIMIT_*); the key is the client's IP, which
#: ProxyFix makes the real one behind TRUSTED_PROXY_HOPS proxies.
limiter = Limiter(key_func=get_remote_address)
#: Security headers (CSP, frame-ancestors, nosniff, Referrer-Policy,
#: Permissions-Policy, HSTS in production); configured in billvend.web.security.
talisman = Talisman()
