"""The Alembic migrations build exactly the schema the models describe."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from billvend.platform.extensions import db
from billvend.accounts.models import User
from tests.helpers import assert_books_balance, make_payment, make_user


def schema_diff():
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def empty_database() -> None:
    """No tables, no function, no Alembic version: ready for ``upgrade()``."""
    db.drop_all()
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


def transfer_function_source() -> str | None:
    """The body of ledger.post_transfer's PostgreSQL function, or None
    (autogenerate does not compare functions, so the tests do)."""
    with db.engine.connect() as conn:
        return conn.scalar(sa.text(
            "SELECT prosrc FROM pg_proc WHERE proname = 'billvend_post_transfer'"))


def transfer_function_exists() -> bool:
    return transfer_function_source() is not None


def test_migrations_match_models(app):
    postgresql = db.engine.dialect.name == "postgresql"
    if postgresql:
        models_function = transfer_function_source()  # create_all made it
        assert models_function
    empty_database()
    if postgresql:
        assert not transfer_function_exists()  # drop_all dropped it
    upgrade()
    assert schema_diff() == []
    if postgresql:
        assert transfer_function_source() == models_function
    downgrade(revision="base")
    assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
    if postgresql:
        assert not transfer_function_exists()
    upgrade()
    assert schema_diff() == []


def test_migrations_carry_the_books(app):
    """Downgrading through 0004 (which rebuilds ``transfers`` on SQLite) and
    upgrading again keeps every row and every invariant, and transfers keep
    working. Rows are compared on the columns that exist at 0003, so later
    migrations that add columns do not change what is compared."""
    empty_database()
    upgrade(revision="0003_transfer_function")
    tables = ("wallets", "transfers", "ledger_entries", "payments")
    inspector = sa.inspect(db.engine)
    columns = {table: [c["name"] for c in inspector.get_columns(table)] for table in tables}
    upgrade()
    user = make_user(balance_kobo=100_000)
    user_id = user.id
    make_payment(user, amount_kobo=40_000)
    db.session.remove()  # no open transaction while the schema changes

    def books():
        with db.engine.connect() as conn:
            return [conn.execute(sa.text(
                f"SELECT {', '.join(columns[table])} FROM {table} ORDER BY id")).all()
                for table in tables]

    before = books()
    downgrade(revision="0003_transfer_function")
    assert books() == before
    upgrade()
    assert books() == before
    assert schema_diff() == []
    assert_books_balance()
    make_payment(db.session.get(User, user_id), amount_kobo=10_000)
    assert db.session.get(User, user_id).wallet.balance_kobo == 50_000
    assert_books_balance()


def test_a_failed_sqlite_migration_changes_nothing(app):
    """SQLite runs the whole upgrade in one transaction (migrations/env.py):
    a failure halfway through 0004's table rebuild leaves the schema, the
    version and foreign-key enforcement as they were, and a re-run works."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL DDL is transactional without help")
    empty_database()
    upgrade(revision="0003_transfer_function")

    def fail_the_rename(conn, cursor, statement, *args):
        if statement.startswith("ALTER TABLE _alembic_tmp_transfers RENAME"):
            raise RuntimeError("simulated failure mid-rebuild")

    sa.event.listen(db.engine, "before_cursor_execute", fail_the_rename)
    try:
        with pytest.raises(SystemExit):  # Flask-Migrate reports and exits 1
            upgrade()
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", fail_the_rename)
    with db.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0003_transfer_function"
        assert not conn.execute(sa.text(
            "SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp%'")).all()
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    upgrade()
    assert schema_diff() == []


def test_0015_phones_stores_e164_and_sets_aside_what_it_cannot_read(app):
    """0015_phones (issue 23): every stored phone that is a Nigerian mobile
    becomes E.164; a user's phone that is not is set aside in phone_to_fix
    (never guessed); downgrading gives users 080... back and restores it
    (payments keep what they hold: a downgrade never rewrites the books)."""
    empty_database()
    upgrade()
    ids = [make_user(f"u{n}@example.com", balance_kobo=100_000).id for n in range(3)]
    make_payment(db.session.get(User, ids[0]), amount_kobo=10_000)
    db.session.commit()
    db.session.remove()
    downgrade(revision="0014_notifications")
    old = {ids[0]: "0803 123 4567", ids[1]: "0201 888 0000", ids[2]: "2348031112222"}
    with db.engine.begin() as conn:
        for user_id, phone in old.items():
            conn.execute(sa.text("UPDATE users SET phone = :p WHERE id = :i"), {"p": phone, "i": user_id})
        conn.execute(sa.text("UPDATE payments SET phone = '08031234567'"))  # as 0014 kept it
    upgrade()
    with db.engine.connect() as conn:
        users = conn.execute(sa.text("SELECT id, phone, phone_to_fix FROM users WHERE id IN "
                                     f"({', '.join(map(str, ids))}) ORDER BY id")).all()
        payment_phones = conn.execute(sa.text("SELECT phone FROM payments")).scalars().all()
    assert [tuple(row) for row in users] == [(ids[0], "+2348031234567", None),
                                             (ids[1], None, "0201 888 0000"),
                                             (ids[2], "+2348031112222", None)]
    assert payment_phones == ["+2348031234567"]
    assert schema_diff() == []
    downgrade(revision="0014_notifications")
    with db.engine.connect() as conn:
        back = dict(conn.execute(sa.text("SELECT id, phone FROM users")).all())
        assert conn.execute(sa.text("SELECT phone FROM payments")).scalars().all() == ["+2348031234567"]
    assert (back[ids[0]], back[ids[1]], back[ids[2]]) == ("08031234567", "0201 888 0000", "08031112222")
    upgrade()
