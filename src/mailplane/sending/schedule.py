"""Cancelling and moving a scheduled message (`send_at`) until it leaves.

As Resend and useSend do it (reference/sending.md: both schedule, both cancel):
`POST …/messages/{id}/cancel/` cancels, `PATCH …/messages/{id}/` with a new `send_at`
moves it. Both act on the rows still waiting for their send time (queue/transitions.py
scheduled_move, which the delivery claim cannot race: it takes rows only once due); when
none is left (sent, being sent, cancelled before) the answer is a 409.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from mailplane.core.errors import Conflict, ValidationFailed
from mailplane.queue.models import OutboundMessage
from mailplane.queue.services import DEFAULT_EXPIRY
from mailplane.queue.transitions import scheduled_move
from mailplane.sending.requests import send_at_parse
from mailplane.servers.models import EmailServer
from mailplane.servers.selectors import server_message_get


class NotScheduled(Conflict):
    code = "not_scheduled"


def _not_scheduled(message_id: int) -> NotScheduled:
    return NotScheduled(
        f"message {message_id} is no longer scheduled: it has been sent (or is being "
        "sent), or was cancelled",
        details={"send_at": ["the message is no longer scheduled"]},
    )


def server_message_cancel(*, server: EmailServer, message_id: int) -> OutboundMessage:
    """Cancel a scheduled message of this server (another server's is NotFound)."""
    message = server_message_get(server=server, message_id=message_id)
    if not scheduled_move(message_id=message.pk, now=timezone.now(), send_at=None, expires_at=None):
        raise _not_scheduled(message.pk)
    return server_message_get(server=server, message_id=message_id)


def server_message_update(
    *, server: EmailServer, message_id: int, fields: dict[str, Any]
) -> OutboundMessage:
    """Move a scheduled message to another `send_at` (the only field that changes)."""
    unknown = sorted(set(fields) - {"send_at"})
    if unknown:
        raise ValidationFailed.on(unknown[0][:80], "cannot be changed (only send_at)")
    if "send_at" not in fields or fields["send_at"] is None:
        raise ValidationFailed.on("send_at", "is required: the new send time")
    now = timezone.now()
    send_at = send_at_parse(fields["send_at"], now=now)
    assert send_at is not None
    message = server_message_get(server=server, message_id=message_id)
    moved = scheduled_move(
        message_id=message.pk, now=now, send_at=send_at, expires_at=send_at + DEFAULT_EXPIRY
    )
    if not moved:
        raise _not_scheduled(message.pk)
    return server_message_get(server=server, message_id=message_id)
