"""The outbox (issue 23): notify queues a message in the caller's unit of work,
once per (event_key, channel, recipient); render fills its templates; the
channel registry hands each channel's sender to the send step."""

from __future__ import annotations

import pytest
from jinja2 import ChoiceLoader, DictLoader

from billvend.notifications import channels
from billvend.notifications.models import PENDING, Message
from billvend.notifications.services import Rendered, notify, render
from billvend.platform.extensions import db
from billvend.platform.transactions import TransactionRuleError, run

TEMPLATES = {
    "messages/hello.subject.txt": "Hello\n{{ name }}",
    "messages/hello.txt": "Hi {{ name }}, your token is {{ token }}.",
    "messages/hello.html": "<p>Hi {{ name }}</p>",
    "messages/hello.sms.txt": "Token {{ token }}\n",
}


@pytest.fixture
def hello_template(app):
    app.jinja_env.loader = ChoiceLoader([DictLoader(TEMPLATES), app.jinja_env.loader])
    yield "hello"


def test_notify_inserts_one_pending_row_and_a_repeat_inserts_nothing(app, hello_template):
    with app.app_context():
        first = run(notify, "payment:1:token", "email", "ada@example.com", "hello", {"token": "1234"})
        again = run(notify, "payment:1:token", "email", "ada@example.com", "hello", {"token": "9999"})
        other = run(notify, "payment:1:token", "sms", "+2348031234567", "hello", {"token": "1234"})
        rows = db.session.scalars(db.select(Message).order_by(Message.id)).all()
        assert first is not None and other is not None and again is None
        assert [(m.channel, m.status, m.attempts, m.context) for m in rows] == [
            ("email", PENDING, 0, {"token": "1234"}), ("sms", PENDING, 0, {"token": "1234"})]


def test_notify_outside_a_unit_of_work_is_refused(app, hello_template):
    with app.app_context():
        with pytest.raises(TransactionRuleError):
            notify("payment:1:token", "email", "ada@example.com", "hello", {})
        with pytest.raises(ValueError):
            run(notify, "payment:1:token", "fax", "ada@example.com", "hello", {})
        assert db.session.scalar(db.select(db.func.count(Message.id))) == 0


def test_a_rolled_back_unit_leaves_no_message(app, hello_template):
    def fails():
        notify("payment:2:token", "email", "ada@example.com", "hello", {})
        raise RuntimeError("the event's own work failed")

    with app.app_context():
        with pytest.raises(RuntimeError):
            run(fails)
        assert db.session.scalar(db.select(db.func.count(Message.id))) == 0


def test_render_fills_every_part_and_keeps_the_subject_on_one_line(app, hello_template):
    with app.app_context():
        message = run(notify, "payment:3:token", "email", "ada@example.com", "hello",
                      {"name": "<Ada>", "token": "1234"})
        assert render(message) == Rendered(subject="Hello <Ada>", text="Hi <Ada>, your token is 1234.",
                                           html="<p>Hi &lt;Ada&gt;</p>", sms="Token 1234")


def test_the_channel_registry_returns_the_registered_sender(app, monkeypatch):
    monkeypatch.setattr(channels, "_SENDERS", {})

    def fake(message, rendered):
        return "id-1"

    channels.register_sender("sms", fake)
    assert channels.sender_for("sms") is fake
    with pytest.raises(channels.SendError) as refused:
        channels.sender_for("pigeon")
    assert refused.value.permanent
