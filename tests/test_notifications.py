"""The outbox (issue 23): notify queues a message in the caller's unit of work,
once per (event_key, channel, recipient); render fills its templates; the
channel registry hands each channel's sender to the send step."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from jinja2 import ChoiceLoader, DictLoader

from billvend.notifications import channels, services, tasks
from billvend.notifications.email import send_email
from billvend.notifications.models import FAILED, PENDING, SENT, Message
from billvend.notifications.outbox import claim
from billvend.notifications.services import Rendered, notify, render
from billvend.notifications.tasks import message_sweep_once, wait_until_idle
from billvend.platform.extensions import db
from billvend.platform.models import utcnow
from billvend.platform.transactions import ExternalCallInTransaction, TransactionRuleError, run
from tests.conftest import base_config, fresh_app

TEMPLATES = {
    "messages/hello.subject.txt": "Hello\n{{ name }}",
    "messages/hello.txt": "Hi {{ name }}, your token is {{ token }}.",
    "messages/hello.html": "<p>Hi {{ name }}</p>",
    "messages/hello.sms.txt": "Token {{ token }}\n",
}


@pytest.fixture
def hello_template(app, monkeypatch):
    """The hello templates, and no sending: these tests look at the outbox alone."""
    monkeypatch.setattr(services, "after_commit_hook", None)
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


# --- Sending over real SMTP (aiosmtpd in this process) -------------------------------------


@pytest.fixture
def app(database_url, smtp):
    """An app whose outbox sends, over SMTP to ``smtp``, with short deadlines and retries."""
    config = base_config(database_url) | {
        "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}", "MAIL_FROM": "billvend <no-reply@billvend.ng>",
        "NOTIFY_CONCURRENCY": 4, "SMTP_DEADLINE_SECONDS": 0.5, "NOTIFY_RETRY_BASE_SECONDS": 1.0,
        "NOTIFY_ATTEMPTS": 3}
    with fresh_app(config) as app:
        app.jinja_env.loader = ChoiceLoader([DictLoader(TEMPLATES), app.jinja_env.loader])
        yield app


def queue(*recipients: str, event="payment:1:token", channel="email"):
    """Queue one hello message per recipient in one unit of work; returns their ids."""
    return run(lambda: [notify(event, channel, r, "hello", {"name": "Ada", "token": "1234 5678"}).id
                        for r in recipients])


def messages() -> list[Message]:
    db.session.rollback()
    return db.session.scalars(db.select(Message).order_by(Message.id)).all()


def test_a_committed_message_is_sent_once_over_smtp_with_text_and_html(app, smtp):
    queue("ada@example.com")
    assert wait_until_idle()
    [mail] = smtp.inbox.messages
    assert (mail["To"], mail["From"], mail["Subject"]) == (
        "ada@example.com", "billvend <no-reply@billvend.ng>", "Hello Ada")
    assert mail.get_body(("plain",)).get_content().strip() == "Hi Ada, your token is 1234 5678."
    assert mail.get_body(("html",)).get_content().strip() == "<p>Hi Ada</p>"
    [row] = messages()
    assert (row.status, row.attempts, row.provider_message_id) == (SENT, 1, mail["Message-ID"])
    assert row.sent_at is not None
    assert message_sweep_once() == 0  # nothing due: sent is final
    assert wait_until_idle() and len(smtp.inbox.messages) == 1


def test_a_message_whose_task_was_lost_is_sent_by_the_sweep_once(app, smtp, monkeypatch):
    monkeypatch.setattr(services, "after_commit_hook", None)  # the enqueue never happened
    queue("ada@example.com")
    assert wait_until_idle() and smtp.inbox.messages == []
    assert message_sweep_once() == 1
    assert wait_until_idle()
    assert message_sweep_once() == 0
    assert wait_until_idle()
    assert smtp.inbox.to() == ["ada@example.com"]
    assert [m.status for m in messages()] == [SENT]


def test_a_dead_senders_claim_expires_and_the_sweep_sends_it_once(app, smtp, monkeypatch):
    monkeypatch.setattr(services, "after_commit_hook", None)
    [message_id] = queue("ada@example.com")
    assert run(claim, message_id) is not None  # a sender took it and died before sending
    assert run(claim, message_id) is None  # nobody else takes it while the claim holds
    assert message_sweep_once() == 0
    run(lambda: db.session.execute(db.update(Message).values(
        next_attempt_at=utcnow() - timedelta(seconds=1))))  # the claim expired
    assert message_sweep_once() == 1 and wait_until_idle()
    assert smtp.inbox.to() == ["ada@example.com"]
    assert [(m.status, m.attempts) for m in messages()] == [(SENT, 2)]


def test_a_repeated_event_delivers_one_email(app, smtp):
    queue("ada@example.com")
    run(lambda: notify("payment:1:token", "email", "ada@example.com", "hello", {}))  # the vend retried
    assert wait_until_idle() and message_sweep_once() == 0 and wait_until_idle()
    assert smtp.inbox.to() == ["ada@example.com"]


def test_an_unreachable_relay_is_retried_with_backoff_then_sent(app, smtp):
    smtp.stop()  # connection refused
    queue("ada@example.com")
    assert wait_until_idle()
    [row] = messages()
    assert (row.status, row.attempts) == (PENDING, 1)
    assert "unreachable" in row.last_error
    assert row.next_attempt_at > utcnow() + timedelta(seconds=0.5)  # NOTIFY_RETRY_BASE_SECONDS
    assert message_sweep_once() == 0  # not due yet
    smtp.start()
    time.sleep(1.1)
    assert message_sweep_once() == 1 and wait_until_idle()
    assert [(m.status, m.attempts, m.last_error) for m in messages()] == [(SENT, 2, None)]
    assert smtp.inbox.to() == ["ada@example.com"]


def test_a_recipient_refused_for_good_fails_at_once_and_is_not_retried(app, smtp):
    smtp.inbox.refuse.add("nobody@example.com")
    queue("nobody@example.com", "ada@example.com")
    assert wait_until_idle()
    refused, sent = messages()
    assert (refused.status, refused.attempts) == (FAILED, 1)
    assert "550" in refused.last_error
    assert sent.status == SENT
    assert message_sweep_once() == 0


def test_a_message_out_of_attempts_ends_failed(app, smtp, monkeypatch):
    monkeypatch.setattr(services, "after_commit_hook", None)  # only the sends below
    smtp.stop()
    [message_id] = queue("ada@example.com")
    for _ in range(3):  # NOTIFY_ATTEMPTS
        tasks._paused_until.clear()
        run(lambda: db.session.execute(db.update(Message).values(
            next_attempt_at=utcnow() - timedelta(seconds=1))))
        tasks.send_message(message_id)
    [row] = messages()
    assert (row.status, row.attempts) == (FAILED, 3)
    assert message_sweep_once() == 0


def test_email_refuses_to_send_inside_a_transaction(app, smtp):
    [message_id] = queue("ada@example.com")
    assert wait_until_idle()
    row = db.session.get(Message, message_id)
    with pytest.raises(ExternalCallInTransaction):
        run(lambda: send_email(row, render(row)))


class SilentServer:
    """Accepts TCP connections on ``port`` and never says a word (a mail relay
    hung after accept): every SMTP client waits for a greeting that never comes."""

    def __init__(self, port: int):
        self.listener = socket.create_server(("127.0.0.1", port), backlog=512, reuse_port=False)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone would not)
        self.listener.close()
        for conn in self.accepted:
            conn.close()
        self.thread.join(timeout=2)


def test_a_mail_server_that_never_answers_slows_no_vend_and_300_messages_arrive_once_it_answers(
        app, smtp, client, customer, pay):
    from billvend.vending.models import Payment

    started = time.monotonic()
    for n in range(5):
        assert pay(meter_number=f"11111111111{n:02d}", amount="500").status_code == 303
    normal = (time.monotonic() - started) / 5

    smtp.stop()
    silent = SilentServer(smtp.port)
    try:
        recipients = [f"customer{n}@example.com" for n in range(300)]
        for batch in range(3):
            handed = time.monotonic()
            queue(*recipients[batch * 100:(batch + 1) * 100])  # commit + the send task, inline
            # 100 inserts and a commit take up to about a second on a loaded CI machine; a
            # send task that waited on the silent server would take SMTP_DEADLINE_SECONDS
            # (0.5 s) per message it tried, 50 s for the batch.
            assert time.monotonic() - handed < 5.0, "the send task waited for the mail server"
        started = time.monotonic()
        for n in range(10):
            assert pay(meter_number=f"22222222222{n:02d}", amount="500").status_code == 303
        during = (time.monotonic() - started) / 10
        assert during < normal * 3 + 0.1, (normal, during)
        assert {p.status for p in db.session.scalars(db.select(Payment))} == {"successful"}
        assert len(silent.accepted) >= 1  # they did try it
        assert wait_until_idle(timeout=10), "the sender threads outlived SMTP_DEADLINE_SECONDS"
        assert [m for m in smtp.inbox.messages if m["To"] != "ada@example.com"] == []
    finally:
        silent.close()

    smtp.start()  # the server answers again
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.2)
        message_sweep_once()
        wait_until_idle(timeout=10)
        if db.session.scalar(db.select(db.func.count(Message.id)).where(
                Message.status == PENDING, Message.channel == "email")) == 0:
            break
        db.session.rollback()
    # Every one, each once (the vends' own token mail to Ada goes out too;
    # their token SMS have no gateway here and stay pending).
    assert sorted(to for to in smtp.inbox.to() if to != "ada@example.com") == sorted(recipients)
    assert {m.status for m in messages() if m.channel == "email"} == {SENT}


def test_flask_messages_send_test_delivers_the_test_email(app, smtp):
    result = app.test_cli_runner().invoke(args=["messages", "send-test", "ops@example.com"])
    assert result.exit_code == 0, result.output
    assert wait_until_idle()
    [mail] = smtp.inbox.messages
    assert (mail["To"], mail["Subject"]) == ("ops@example.com", "billvend test email")
    assert "SMTP_URL and MAIL_FROM work" in mail.get_body(("plain",)).get_content()
    assert "<code>SMTP_URL</code>" in mail.get_body(("html",)).get_content()
    assert app.test_cli_runner().invoke(args=["messages", "send-test", " "]).exit_code == 1
    assert [m.status for m in messages()] == [SENT]


def test_a_unit_of_work_rerun_after_a_conflict_queues_and_delivers_one_email(app, smtp):
    """The event's unit loses a race once (a stale version) and runs again:
    its notify runs twice, one row is kept and one email arrives."""
    from sqlalchemy.orm.exc import StaleDataError

    tries = []

    def event():
        notify("payment:7:token", "email", "ada@example.com", "hello", {"name": "Ada", "token": "1"})
        tries.append(1)
        if len(tries) == 1:
            raise StaleDataError("another worker moved the payment first")

    run(event)
    assert len(tries) == 2
    assert wait_until_idle() and message_sweep_once() == 0 and wait_until_idle()
    assert smtp.inbox.to() == ["ada@example.com"]
    assert [(m.event_key, m.status) for m in messages()] == [("payment:7:token", SENT)]
