"""The transaction rule (billvend/platform/transactions.py): one owner of each
transaction, never nested, no external call inside one."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.accounts.models import User


def _new_user(email: str) -> User:
    user = User(email=email, full_name="Ada Obi", phone="08030000000", password_hash="x")
    db.session.add(user)
    return user


def _count_users() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(User))


def test_the_unit_commits_what_the_function_staged(app):
    @transactions.unit_of_work
    def work():
        _new_user("one@example.com")
        db.session.flush()

    work()
    db.session.rollback()  # nothing left to roll back: it was committed
    assert _count_users() == 1


def test_an_error_rolls_the_whole_unit_back(app):
    @transactions.unit_of_work
    def work():
        _new_user("two@example.com")
        db.session.flush()
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        work()
    assert _count_users() == 0
    assert not transactions.in_unit_of_work()


def test_nesting_a_unit_raises_and_changes_nothing(app):
    @transactions.unit_of_work
    def inner():
        _new_user("inner@example.com")

    @transactions.unit_of_work
    def outer():
        _new_user("outer@example.com")
        db.session.flush()
        inner()

    with pytest.raises(transactions.NestedUnitOfWork):
        outer()
    assert _count_users() == 0


def test_a_unit_refuses_writes_staged_outside_any_unit(app):
    @transactions.unit_of_work
    def work():
        pass

    _new_user("staged@example.com")
    with pytest.raises(transactions.UncommittedWork):
        work()
    db.session.rollback()

    _new_user("flushed@example.com")
    db.session.flush()
    with pytest.raises(transactions.UncommittedWork):
        work()
    db.session.rollback()
    work()  # after the rollback the session is clean again


def test_no_external_call_inside_a_unit_or_over_staged_writes(app):
    transactions.require_no_transaction("gateway verify")  # clean session: allowed

    @transactions.unit_of_work
    def work():
        transactions.require_no_transaction("provider pay")

    with pytest.raises(transactions.ExternalCallInTransaction, match="provider pay"):
        work()

    _new_user("pending@example.com")
    db.session.flush()
    with pytest.raises(transactions.ExternalCallInTransaction):
        transactions.require_no_transaction("sms send")
    db.session.rollback()
    transactions.require_no_transaction("sms send")
