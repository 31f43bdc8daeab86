"""Sending through an email server: check, compose, enqueue, in that order.

message_prepare() is everything that can refuse a message (identity, stream, size) and
touches nothing; messages_send() then queues prepared messages in ONE transaction, so a
batch is one commit and the caller's 2xx follows it: acknowledged means durable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mailplane.core.errors import ValidationFailed
from mailplane.domains.models import Domain, VerificationState
from mailplane.message.cleanup import message_cleanup
from mailplane.queue.models import (
    EventType,
    MessageSource,
    OutboundMessage,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
)
from mailplane.queue.services import EnqueueRequest, message_enqueue_many
from mailplane.queue.transitions import Transition, transitions_apply
from mailplane.sending.compose import message_compose
from mailplane.sending.errors import MessageTooLarge, SenderNotVerified
from mailplane.sending.requests import MESSAGE_MAX_BYTES, SendRequest
from mailplane.servers.models import (
    ContentFilter,
    EmailServer,
    MessageStream,
    MessageTag,
    ServerKey,
    ServerMessage,
    StreamKind,
)
from mailplane.shield.services import content_check, content_refusal
from mailplane.tracking.selectors import TrackingConfig, tracking_config_load
from mailplane.tracking.services import TrackingPlan, tracked_messages_create, tracking_prepare

SANDBOX_REPLY = "250 2.0.0 sandbox server: accepted and recorded, not delivered"
# The reply delivery's hold_if_suppressed writes: the same outcome, found earlier.
SUPPRESSED_REPLY = "550 5.7.1 recipient is on the suppression list"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message that passed every check, ready for the queue."""

    request: SendRequest
    stream: MessageStream
    domain: Domain
    raw: bytes
    suppressed: frozenset[str] = frozenset()  # recipients (lower-case) on the list
    tracking: TrackingPlan | None = None  # links rewritten, pixel added (tracking/)


@dataclass(frozen=True, slots=True)
class Sent:
    message: OutboundMessage
    stream: MessageStream
    recipients: list[str]
    sandbox: bool
    suppressed: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The message's: `suppressed` when every recipient is, else `delivered` on a
        sandbox server and `queued` on a live one."""
        if len(self.suppressed) == len(self.recipients):
            return RecipientStatus.SUPPRESSED
        return RecipientStatus.DELIVERED if self.sandbox else RecipientStatus.QUEUED


@dataclass(slots=True)
class SendContext:
    """What checking many messages of one server reads once: its streams, its account's
    verified domains by name (filled as senders are seen)."""

    server: EmailServer
    streams: dict[str, MessageStream]
    domains: dict[str, Domain | None] = field(default_factory=dict)
    tracking: TrackingConfig | None = None

    @classmethod
    def load(cls, server: EmailServer) -> SendContext:
        return cls(
            server=server,
            streams={s.stream_id: s for s in server.streams.all()},
            tracking=tracking_config_load(server=server),
        )


def _verified_domain(ctx: SendContext, name: str) -> Domain | None:
    if name not in ctx.domains:
        ctx.domains[name] = (
            Domain.objects.select_related("relay_server")
            .filter(
                organization_id=ctx.server.organization_id,
                name=name,
                verification_state=VerificationState.VERIFIED,
            )
            .first()
        )
    return ctx.domains[name]


def _stream(ctx: SendContext, stream_id: str | None) -> MessageStream:
    if stream_id is None:
        default = ctx.server.default_stream_id
        found = next((s for s in ctx.streams.values() if s.pk == default), None)
        if found is None:  # a server always has one; say so rather than fail obscurely
            raise ValidationFailed.on("stream", "the server has no default stream: name one")
        return found
    stream = ctx.streams.get(stream_id)
    if stream is None:
        known = ", ".join(sorted(ctx.streams))
        raise ValidationFailed.on("stream", f"no stream {stream_id!r} on this server ({known})")
    return stream


def message_prepare(*, ctx: SendContext, request: SendRequest) -> Prepared:
    """Check what the request alone cannot tell (identity, stream, size); compose."""
    domain = _verified_domain(ctx, request.sender.domain)
    if domain is None:
        raise SenderNotVerified(
            f"from: {request.sender.address} is not a verified sender identity of this "
            f"account: add and verify the domain {request.sender.domain}",
            details={"from": [f"no verified sender identity for {request.sender.domain} (domain)"]},
        )
    stream = _stream(ctx, request.stream)
    plan = None
    if ctx.tracking is not None and request.html:
        # Rewritten before composition, so the DKIM signature (at delivery) covers the
        # tracked links and the pixel.
        html, plan = tracking_prepare(
            config=ctx.tracking,
            stream=stream,
            html=request.html,
            recipients=len(request.recipients),
            track_opens=request.track_opens,
            track_links=request.track_links,
        )
        if plan is not None:
            request = replace(request, html=html)
    raw = message_cleanup(
        message_compose(request),
        sender=request.sender.address,
        # RFC 5321 §4.4: the trace clause names the protocol the message came in by.
        received=f"by {settings.MAILPLANE['SHARED_SMTP_HOST']} with HTTP",
    )
    if len(raw) > MESSAGE_MAX_BYTES:
        sizes = {
            "html": len(request.html),
            "text": len(request.text),
            "attachments": sum(len(a.data) for a in request.attachments),
        }
        biggest = max(sizes, key=lambda name: sizes[name])
        raise MessageTooLarge(
            f"the message is {len(raw)} bytes, over the limit of {MESSAGE_MAX_BYTES}",
            details={biggest: [f"the message is over {MESSAGE_MAX_BYTES} bytes"]},
        )
    if ctx.server.content_filter == ContentFilter.REJECT:
        verdict = content_check(
            raw,
            sender=request.sender.address,
            recipients=request.recipients,
            broadcast=stream.kind == StreamKind.BROADCAST,
        )
        if verdict.refuses(ctx.server.content_threshold):
            raise content_refusal(verdict)
    # Checked before the queue (issue 11), so the answer says at once which recipients
    # will get nothing, rather than a silent drop at delivery time.
    addresses = [a.lower() for a in request.recipients]
    suppressed = frozenset(
        Suppression.objects.filter(
            organization_id=ctx.server.organization_id, address__in=addresses
        ).values_list("address", flat=True)
    )
    return Prepared(
        request=request,
        stream=stream,
        domain=domain,
        raw=raw,
        suppressed=suppressed,
        tracking=plan,
    )


def _dry(server: EmailServer, prepared: Prepared) -> bool:
    """Recorded as delivered and never sent: a sandbox server, or a request's test mode."""
    return server.sandbox or prepared.request.test_mode


def messages_send(
    *, server: EmailServer, prepared: Sequence[Prepared], server_key: ServerKey | None = None
) -> list[Sent]:
    """Queue prepared messages, their server links and their early outcomes in ONE
    transaction. A sandbox server's (or a test-mode request's) recipients go straight to
    delivered, suppressed ones to suppressed, through the queue's transitions before the
    commit: no delivery worker ever sees them queued."""
    if not prepared:
        return []
    requests = [
        EnqueueRequest(
            organization=server.organization,
            mail_from=p.request.sender.address,
            recipients=p.request.recipients,
            raw=p.raw,
            source=MessageSource.API,
            relay_server=p.domain.relay_server,
            domain=p.domain,
        )
        for p in prepared
    ]
    with transaction.atomic():
        messages = message_enqueue_many(requests)
        links = ServerMessage.objects.bulk_create(
            ServerMessage(
                message=m,
                server=server,
                stream=p.stream,
                server_key=server_key,
                tags=p.request.tags,
                metadata=p.request.metadata,
                sandbox=_dry(server, p),
            )
            for m, p in zip(messages, prepared, strict=True)
        )
        tracked_messages_create([(m, p.tracking) for m, p in zip(messages, prepared, strict=True)])
        MessageTag.objects.bulk_create(
            MessageTag(message=link, server=server, tag=tag)
            for link, p in zip(links, prepared, strict=True)
            for tag in p.request.tags
        )
        suppressed = {m.pk: p.suppressed for m, p in zip(messages, prepared, strict=True)}
        dry = {m.pk for m, p in zip(messages, prepared, strict=True) if _dry(server, p)}
        if dry or any(suppressed.values()):
            rows = QueuedRecipient.objects.filter(message__in=messages).select_related("message")
            steps = []
            for row in rows.order_by("pk"):
                if row.rcpt_to.lower() in suppressed[row.message_id]:
                    steps.append(
                        Transition(
                            row=row,
                            event=EventType.SUPPRESSED,
                            status=RecipientStatus.SUPPRESSED,
                            reply=SUPPRESSED_REPLY,
                            detail="suppressed before queueing",
                        )
                    )
                elif row.message_id in dry:
                    steps.append(
                        Transition(
                            row=row,
                            event=EventType.DELIVERED,
                            status=RecipientStatus.DELIVERED,
                            reply=SANDBOX_REPLY,
                            detail="sandbox",
                        )
                    )
            transitions_apply(steps, now=timezone.now())
    return [
        Sent(
            message=m,
            stream=p.stream,
            recipients=list(p.request.recipients),
            sandbox=_dry(server, p),
            suppressed=[a for a in p.request.recipients if a.lower() in p.suppressed],
        )
        for m, p in zip(messages, prepared, strict=True)
    ]


def message_send(*, server: EmailServer, request: SendRequest) -> Sent:
    prepared = message_prepare(ctx=SendContext.load(server), request=request)
    return messages_send(server=server, prepared=[prepared])[0]
