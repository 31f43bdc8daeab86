"""Reads for email servers, always scoped to one account (another's ids are not found)."""

from __future__ import annotations

from django.db.models import QuerySet

from mailplane.core.errors import NotFound
from mailplane.queue.models import OutboundMessage
from mailplane.servers.models import EmailServer, ServerKey
from mailplane.tenancy.models import Organization


def email_server_list(*, organization: Organization) -> QuerySet[EmailServer]:
    return (
        EmailServer.objects.filter(organization=organization)
        .select_related("default_stream")
        .prefetch_related("streams")
        .order_by("id")
    )


def email_server_get(*, organization: Organization, server_id: int) -> EmailServer:
    server = email_server_list(organization=organization).filter(pk=server_id).first()
    if server is None:
        raise NotFound("server not found")
    return server


def server_key_list(*, server: EmailServer) -> QuerySet[ServerKey]:
    return ServerKey.objects.filter(server=server).order_by("id")


def server_message_list(
    *,
    server: EmailServer,
    recipient: str | None = None,
    status: str | None = None,
    tag: str | None = None,
    stream: str | None = None,
) -> QuerySet[OutboundMessage]:
    """The server's messages, newest first, by any of: a recipient address (exact,
    case-insensitive), a recipient status, a tag, a stream id."""
    qs = OutboundMessage.objects.filter(
        organization_id=server.organization_id, server_link__server=server
    )
    if recipient:
        qs = qs.filter(recipients__rcpt_to__iexact=recipient)
    if status:
        qs = qs.filter(recipients__status=status)
    if tag:
        qs = qs.filter(server_link__tag_rows__tag=tag)
    if stream:
        qs = qs.filter(server_link__stream__stream_id=stream)
    return (
        qs.distinct()
        .order_by("-id")
        .select_related("server_link", "server_link__stream")
        .prefetch_related("recipients")
    )


def server_message_get(*, server: EmailServer, message_id: int) -> OutboundMessage:
    message = (
        OutboundMessage.objects.filter(
            organization_id=server.organization_id, server_link__server=server, pk=message_id
        )
        .select_related("server_link", "server_link__stream")
        .prefetch_related("recipients", "events")
        .first()
    )
    if message is None:
        raise NotFound("message not found")
    return message
