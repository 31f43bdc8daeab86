"""Reads of the queue for the account: its outbound messages with their recipients and
delivery events. Scoped to the organization: another tenant's message is a NotFound."""

from __future__ import annotations

from django.db.models import QuerySet

from mailplane.core.errors import NotFound
from mailplane.queue.models import OutboundMessage
from mailplane.tenancy.models import Organization


def message_list(
    *, organization: Organization, mailbox: int | None = None
) -> QuerySet[OutboundMessage]:
    """Newest first, each with its recipients (not its events: they grow with every retry,
    and a list is read for the recipients' status)."""
    qs = OutboundMessage.objects.filter(organization=organization).order_by("-id")
    if mailbox is not None:
        qs = qs.filter(mailbox_id=mailbox)
    return qs.prefetch_related("recipients")


def message_get(*, organization: Organization, message_id: int) -> OutboundMessage:
    """One message with its recipients and every delivery event."""
    message = (
        OutboundMessage.objects.filter(organization=organization, pk=message_id)
        .prefetch_related("recipients", "events")
        .first()
    )
    if message is None:
        raise NotFound("message not found")
    return message
