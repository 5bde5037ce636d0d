"""The "email" channel: multipart mail (text + HTML) over SMTP with Flask-Mailman.

Where it goes is ``SMTP_URL`` (billvend.platform.config.parse_smtp_url: TLS
from the scheme), from ``MAIL_FROM``. Each send opens its own connection (a
relay that dropped an idle one never fails the next message) and gives up by
``SMTP_DEADLINE_SECONDS`` in all: every socket operation times out by then,
and a watchdog closes the socket at the deadline, so a server that trickles
one byte at a time cannot hold a sender thread longer either.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
from email.utils import make_msgid

from flask import Flask, current_app
from flask_mailman import EmailMultiAlternatives, Mail

from billvend.notifications.channels import SendError, register_sender
from billvend.notifications.models import EMAIL, Message
from billvend.notifications.services import Rendered
from billvend.platform.config import parse_smtp_url
from billvend.platform.transactions import require_no_transaction

mail = Mail()

# Answers that mean "this address will never take it" (RFC 5321 5xx about
# the recipient or the mailbox): the message is not retried.
_PERMANENT_RECIPIENT_CODES = frozenset({550, 551, 553})


def init_app(app: Flask) -> None:
    """Point Flask-Mailman at ``SMTP_URL`` and register the email sender."""
    smtp = parse_smtp_url(app.config["SMTP_URL"])
    app.config.update(MAIL_BACKEND="smtp", MAIL_SERVER=smtp["host"], MAIL_PORT=smtp["port"],
                      MAIL_USERNAME=smtp["username"], MAIL_PASSWORD=smtp["password"],
                      MAIL_USE_TLS=smtp["tls"] == "starttls", MAIL_USE_SSL=smtp["tls"] == "ssl",
                      MAIL_TIMEOUT=app.config["SMTP_DEADLINE_SECONDS"],
                      MAIL_DEFAULT_SENDER=app.config["MAIL_FROM"])
    mail.init_app(app)
    register_sender(EMAIL, send_email)


def _abort(connection) -> None:
    sock = getattr(getattr(connection, "connection", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def send_email(message: Message, rendered: Rendered) -> str:
    """Send ``message`` (``rendered``: its subject, text and HTML) to its
    recipient; returns the Message-ID it was sent with (the relay's queue id
    is not part of SMTP's answer to a client).

    :raises SendError: permanent for a recipient the relay refuses for good
        (550/551/553) or a message with no text; temporary, with
        ``channel_down``, when the relay cannot be reached, times out or hangs
        up; temporary otherwise (4xx, other 5xx).
    """
    require_no_transaction("email send")
    if not rendered.text:
        raise SendError(f"template {message.template!r} has no email text", permanent=True)
    message_id = make_msgid(domain="billvend.ng")
    email = EmailMultiAlternatives(subject=rendered.subject, body=rendered.text,
                                   from_email=current_app.config["MAIL_FROM"], to=[message.recipient],
                                   headers={"Message-ID": message_id})
    if rendered.html:
        email.attach_alternative(rendered.html, "text/html")
    connection = mail.get_connection(backend="smtp", fail_silently=False)
    watchdog = threading.Timer(current_app.config["SMTP_DEADLINE_SECONDS"], _abort, (connection,))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.send_messages([email])
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {code for code, _ in exc.recipients.values()}
        raise SendError(f"recipient refused: {exc.recipients}",
                        permanent=codes <= _PERMANENT_RECIPIENT_CODES) from exc
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError) as exc:
        raise SendError(f"mail relay unreachable: {type(exc).__name__}: {exc}", channel_down=True) from exc
    except smtplib.SMTPException as exc:  # (an OSError too: before the next line)
        raise SendError(f"mail relay refused: {type(exc).__name__}: {exc}") from exc
    except (ssl.SSLError, OSError) as exc:  # refused, timed out, reset, aborted at the deadline
        raise SendError(f"mail relay unreachable: {type(exc).__name__}: {exc}", channel_down=True) from exc
    finally:
        watchdog.cancel()
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - an aborted socket may fail to QUIT
            pass
    return message_id
