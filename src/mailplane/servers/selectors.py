"""Reads for email servers, always scoped to one account (another's ids are not found)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple

from django.db.models import Q, QuerySet

from mailplane.core.errors import NotFound
from mailplane.queue.models import OutboundMessage, Suppression
from mailplane.servers.models import (
    BounceRule,
    EmailServer,
    MessageMetadata,
    MessageStream,
    SenderIdentity,
    ServerKey,
    ServerMessage,
)
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
    metadata_key: str | None = None,
    metadata_value: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[OutboundMessage]:
    """The server's messages, newest first, by any of: a recipient address (exact,
    case-insensitive), a recipient status, a tag, a stream id, a metadata key (and
    value), a time range (created at or after `since`, before `until`).

    Each filter is an index lookup: tags and metadata through their side tables
    (MessageTag, MessageMetadata: (server, key, value)), times on created_at."""
    qs = OutboundMessage.objects.filter(
        organization_id=server.organization_id, server_link__server=server
    )
    if metadata_key:
        pairs = MessageMetadata.objects.filter(server=server, key=metadata_key)
        if metadata_value is not None:
            pairs = pairs.filter(value=metadata_value)
        qs = qs.filter(pk__in=pairs.values("message_id"))
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
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


def sender_identity_list(
    *, organization: Organization, server_id: int | None = None
) -> QuerySet[SenderIdentity]:
    """The account's identities; with `server_id`, those that server may send from
    (the account-wide ones and its own)."""
    qs = SenderIdentity.objects.filter(organization=organization)
    if server_id is not None:
        qs = qs.filter(Q(server__isnull=True) | Q(server_id=server_id))
    return qs.order_by("id")


def sender_identity_get(*, organization: Organization, identity_id: int) -> SenderIdentity:
    identity = SenderIdentity.objects.filter(organization=organization, pk=identity_id).first()
    if identity is None:
        raise NotFound("sender identity not found")
    return identity


def stream_get(*, server: EmailServer, stream_id: str) -> MessageStream:
    stream = MessageStream.objects.filter(server=server, stream_id=stream_id).first()
    if stream is None:
        raise NotFound(f"no stream {stream_id!r} on this server")
    return stream


def suppression_list(
    *,
    server: EmailServer,
    stream: MessageStream | None = None,
    address: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Suppression]:
    """The server's suppressions (every stream's, or one's), newest first."""
    qs = Suppression.objects.filter(organization_id=server.organization_id, stream__server=server)
    if stream is not None:
        qs = qs.filter(stream=stream)
    if address:
        qs = qs.filter(address=address.lower())
    if reason:
        qs = qs.filter(reason=reason)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    return qs.select_related("stream").order_by("-created_at", "-id")


def bounce_rule_list(*, server: EmailServer) -> QuerySet[BounceRule]:
    return BounceRule.objects.filter(server=server).order_by("id")


def bounce_rules_for_messages(message_ids: Collection[int]) -> dict[int, list[BounceRule]]:
    """Each message's server's override rules, oldest first (two queries, any number of
    messages); messages not sent through a server, or whose server has none, are absent."""
    servers = dict(
        ServerMessage.objects.filter(message_id__in=list(message_ids)).values_list(
            "message_id", "server_id"
        )
    )
    if not servers:
        return {}
    by_server: dict[int, list[BounceRule]] = {}
    for rule in BounceRule.objects.filter(server_id__in=set(servers.values())).order_by("id"):
        by_server.setdefault(rule.server_id, []).append(rule)
    return {m: by_server[s] for m, s in servers.items() if s in by_server}


class ServerLink(NamedTuple):
    """What delivery needs of a message sent through a server: whose, which stream, which key."""

    server_id: int
    stream_id: int
    server_key_id: int | None


def server_links(message_ids: Collection[int]) -> dict[int, ServerLink]:
    """The server links of those messages that have one (one query, any number)."""
    return {
        m: ServerLink(server, stream, key)
        for m, server, stream, key in ServerMessage.objects.filter(
            message_id__in=list(message_ids)
        ).values_list("message_id", "server_id", "stream_id", "server_key_id")
    }
