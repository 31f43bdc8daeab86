"""Reads of received messages, scoped to one server or one account (another's ids are
not found)."""

from __future__ import annotations

from django.db.models import QuerySet

from mailplane.core.errors import NotFound
from mailplane.inbound.models import InboundMessage
from mailplane.servers.models import EmailServer
from mailplane.tenancy.models import Organization


def inbound_message_list(*, server: EmailServer) -> QuerySet[InboundMessage]:
    """Newest first, without the raw bytes (lists never need them)."""
    return (
        InboundMessage.objects.filter(server=server)
        .select_related("stream")
        .defer("raw")
        .order_by("-id")
    )


def inbound_message_get(
    *,
    message_id: int,
    server: EmailServer | None = None,
    organization: Organization | None = None,
) -> InboundMessage:
    """One message of the server (a server key) or of the account (an account key)."""
    qs = InboundMessage.objects.filter(pk=message_id).select_related("stream")
    if server is not None:
        qs = qs.filter(server=server)
    elif organization is not None:
        qs = qs.filter(organization=organization)
    else:
        raise ValueError("scope by a server or an organization")
    found = qs.first()
    if found is None:
        raise NotFound("inbound message not found")
    return found
