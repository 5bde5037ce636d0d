"""The registry of senders, one per channel (email: billvend.notifications.email,
SMS: billvend.notifications.sms). The outbox knows senders only through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from billvend.notifications.models import Message
    from billvend.notifications.services import Rendered


class SendError(Exception):
    """A send that did not go out.

    ``permanent=True``: retrying cannot help (an invalid number or address, a
    refused sender ID); the message ends ``failed`` at once. Otherwise (a
    timeout, a refused connection, a 5xx) it is retried with backoff.
    ``channel_down=True``: the gateway itself could not be reached (refused,
    timed out, hung up); the sender leaves the whole channel alone for
    ``NOTIFY_RETRY_BASE_SECONDS`` instead of trying each queued message.
    """

    def __init__(self, message: str, *, permanent: bool = False, channel_down: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.channel_down = channel_down


Sender = Callable[["Message", "Rendered"], str]
_SENDERS: dict[str, Sender] = {}


def register_sender(channel: str, send: Sender) -> None:
    """Make ``send(message, rendered) -> provider message id`` the sender of
    ``channel`` ("email" or "sms"); a second registration replaces the first
    (tests swap senders).

    ``send`` runs outside any database transaction, must give up by its own
    hard deadline, and raises :class:`SendError` when the message did not go
    out (any other exception counts as a temporary failure).
    """
    _SENDERS[channel] = send


def sender_for(channel: str) -> Sender:
    """The registered sender of ``channel``.

    :raises SendError: (permanent) when no sender is registered for it.
    """
    try:
        return _SENDERS[channel]
    except KeyError:
        raise SendError(f"no sender registered for channel {channel!r}", permanent=True) from None
