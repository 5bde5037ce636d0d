"""Admin pages for the outbox (issue 23): every message with its state
(pending, sent with the gateway's id, failed with the error), its content
unless it is secret ("(hidden)": tokens and codes are the customer's alone),
and an audited "retry" for one that did not go out."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from billvend.accounts.models import AdminAction
from billvend.notifications import outbox
from billvend.notifications.models import MESSAGE_STATUSES, Message, has_secrets
from billvend.notifications.services import render
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.web.admin import bp
from billvend.web.admin.forms import ReasonForm
from billvend.web.forms import query_int

PAGE_SIZE = 50
HIDDEN = "(hidden)"
LINK_HIDDEN = "link hidden"


def content_of(message: Message) -> str:
    """What the admin list shows of a message: "(hidden)" for a secret one,
    else its subject (email) or text (SMS), with "(link hidden)" for one
    carrying a link (``secret_`` context values are never rendered here); a
    template that no longer renders says so instead of failing the page."""
    if message.secret:
        return HIDDEN
    if has_secrets(message.context):
        subject = " ".join(str(_part_or_blank(f"{message.template}.subject.txt")).split())
        return f"{subject} ({LINK_HIDDEN})".strip()
    try:
        rendered = render(message)
    except Exception:  # noqa: BLE001 - one broken template must not hide the list
        return f"(template {message.template} does not render)"
    return rendered.subject if message.channel == "email" else rendered.sms


def _part_or_blank(name: str) -> str:
    """A message part rendered with no context (a subject that needs none)."""
    try:
        return current_app.jinja_env.get_template(f"messages/{name}").render()
    except Exception:  # noqa: BLE001 - a missing or broken part shows nothing
        return ""


@bp.route("/messages")
def messages():
    status = request.args.get("status") or ""
    query = sa.select(Message).order_by(Message.id.desc()).limit(PAGE_SIZE + 1)
    if status in MESSAGE_STATUSES:
        query = query.where(Message.status == status)
    before = query_int("before")
    if before:
        query = query.where(Message.id < before)
    rows = db.session.scalars(query).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render_template("admin/messages.html", rows=rows, status=status, statuses=MESSAGE_STATUSES,
                           content_of=content_of, next_before=rows[-1].id if more else None,
                           retry_form=ReasonForm(formdata=None, prefix="retry"))


@bp.route("/messages/<int:message_id>/retry", methods=["POST"])
def retry_message(message_id: int):
    if db.session.get(Message, message_id) is None:
        abort(404)
    db.session.rollback()
    form = ReasonForm(prefix="retry")
    if not form.validate_on_submit():
        flash("; ".join(form.reason.errors) or "Give a reason.", "error")
        return redirect(url_for("admin.messages"), code=303)
    reason, admin_id = form.reason.data.strip(), current_user.id

    def retry() -> str:
        refused = outbox.retry(message_id)
        result = f"refused: {refused}" if refused else "done: queued again"
        db.session.add(AdminAction(admin_id=admin_id, action="retry_message", reason=reason[:500],
                                   result=f"message {message_id}: {result}"[:500]))
        return result

    result = transactions.run(retry)
    flash(f"Message {message_id}: {result}.", "error" if result.startswith("refused") else "success")
    return redirect(url_for("admin.messages"), code=303)
