"""The Alembic migrations build exactly the schema the models describe."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from billvend.extensions import db


def schema_diff():
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def transfer_function_exists() -> bool:
    """Whether PostgreSQL has ledger.post_transfer's function (autogenerate
    does not compare functions)."""
    with db.engine.connect() as conn:
        return conn.scalar(sa.text(
            "SELECT count(*) FROM pg_proc WHERE proname = 'billvend_post_transfer'")) == 1


def test_migrations_match_models(app):
    postgresql = db.engine.dialect.name == "postgresql"
    if postgresql:
        assert transfer_function_exists()  # create_all made it
    db.drop_all()
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    if postgresql:
        assert not transfer_function_exists()  # drop_all dropped it
    upgrade()
    assert schema_diff() == []
    if postgresql:
        assert transfer_function_exists()
    downgrade(revision="base")
    assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
    if postgresql:
        assert not transfer_function_exists()
    upgrade()
    assert schema_diff() == []
