"""Sending through an email server: check, compose, enqueue, in that order.

message_prepare() is everything that can refuse a message (identity, stream, size) and
touches nothing; messages_send() then queues prepared messages in ONE transaction, so a
batch is one commit and the caller's 2xx follows it: acknowledged means durable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import DomainError, SmtpStatus, ValidationFailed
from mailplane.domains.models import Domain, VerificationState
from mailplane.message.cleanup import message_cleanup
from mailplane.message.headers import headers_of, prepend
from mailplane.queue.models import (
    EventType,
    MessageSource,
    OutboundMessage,
    Priority,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
)
from mailplane.queue.services import EnqueueRequest, message_enqueue_many
from mailplane.queue.transitions import Transition, transitions_apply
from mailplane.relays.models import RelayServer, RelayStatus
from mailplane.reputation.caps import caps_reserve
from mailplane.reputation.pause import sending_pause_check
from mailplane.sending.compose import message_compose
from mailplane.sending.errors import MessageTooLarge, SenderNotVerified, StreamRefused
from mailplane.sending.requests import MESSAGE_MAX_BYTES, SendRequest, send_request_parse
from mailplane.sending.unsubscribe import IssuedToken, unsubscribe_token_issue
from mailplane.servers.models import (
    ContentFilter,
    EmailServer,
    IdentityStatus,
    MessageMetadata,
    MessageStream,
    MessageTag,
    SenderIdentity,
    ServerKey,
    ServerMessage,
    StreamKind,
)
from mailplane.shield.checks import Content
from mailplane.shield.services import Verdict, content_check, content_refusal
from mailplane.tracking.selectors import TrackingConfig, tracking_config_load
from mailplane.tracking.services import TrackingPlan, tracked_messages_create, tracking_prepare

BATCH_MAX = 500  # Postmark's batch limit
SANDBOX_REPLY = "250 2.0.0 sandbox server: accepted and recorded, not delivered"
# The reply delivery's hold_if_suppressed writes: the same outcome, found earlier.
SUPPRESSED_REPLY = "550 5.7.1 recipient is on the suppression list"
HELD_REPLY = "held by the content filter (score {score:g}): {symbols}"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message that passed every check, ready for the queue: from the send API (a
    SendRequest composed here) or from SMTP submission (bytes as the client sent them)."""

    sender: str  # the envelope sender
    recipients: list[str]
    stream: MessageStream
    identity: Identity
    raw: bytes
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    test_mode: bool = False
    suppressed: frozenset[str] = frozenset()  # recipients (lower-case) on the list
    unsubscribe: IssuedToken | None = None  # a broadcast message's List-Unsubscribe token
    send_at: datetime | None = None  # held in the queue until then
    source: str = MessageSource.API  # MessageSource.SMTP: submitted with a server key
    tracking: TrackingPlan | None = None  # links rewritten, pixel added (tracking/)
    # Over the threshold of a server whose content filter holds (ContentFilter.HOLD):
    # queued held, with this verdict, until an operator releases or cancels it.
    held: Verdict | None = None

    @property
    def priority(self) -> Priority:
        """Broadcast mail waits in the bulk lane (delivery/claims.py)."""
        return Priority.BULK if self.stream.kind == StreamKind.BROADCAST else Priority.INTERACTIVE


@dataclass(frozen=True, slots=True)
class Identity:
    """What lets an address send: a verified domain of the account (its DKIM key signs
    and its relay server carries the mail), or a confirmed single-address identity
    (Postmark's Sender Signature: no DKIM key of ours for, say, gmail.com, so the
    message goes unsigned by us through the account's first active relay server)."""

    domain: Domain | None
    relay_server: RelayServer | None


@dataclass(frozen=True, slots=True)
class Sent:
    message: OutboundMessage
    stream: MessageStream
    recipients: list[str]
    sandbox: bool
    suppressed: list[str] = field(default_factory=list)
    send_at: datetime | None = None  # held in the queue until then
    held: bool = False  # by the server's content filter, until released

    @property
    def status(self) -> str:
        """The message's: `suppressed` when every recipient is, else `delivered` on a
        sandbox server, `held` when the content filter held it, `scheduled` with a send
        time and `queued` on a live one."""
        if len(self.suppressed) == len(self.recipients):
            return RecipientStatus.SUPPRESSED
        if self.sandbox:
            return RecipientStatus.DELIVERED
        if self.held:
            return RecipientStatus.HELD
        return RecipientStatus.SCHEDULED if self.send_at else RecipientStatus.QUEUED


@dataclass(slots=True)
class SendContext:
    """What checking many messages of one server reads once: its streams, its account's
    verified domains by name and identities by address (filled as senders are seen)."""

    server: EmailServer
    streams: dict[str, MessageStream]
    domains: dict[str, Domain | None] = field(default_factory=dict)
    identities: dict[str, Identity | SenderNotVerified] = field(default_factory=dict)
    tracking: TrackingConfig | None = None
    # Lower-case address -> the streams it is suppressed on (None: account-wide), for
    # every address looked up so far: a batch asks once for all its recipients.
    suppressions: dict[str, set[int | None]] = field(default_factory=dict)

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


def _relay_of_account(organization_id: int) -> RelayServer | None:
    return (
        RelayServer.objects.filter(organization_id=organization_id, status=RelayStatus.ACTIVE)
        .order_by("id")
        .first()
    )


def sender_identity_check(ctx: SendContext, address: str) -> Identity:
    """The identity `address` sends under, or SenderNotVerified naming what is missing
    (HTTP 422; SMTP 550 5.7.1)."""
    address = address.lower()
    if address in ctx.identities:
        found = ctx.identities[address]
        if isinstance(found, SenderNotVerified):
            raise found
        return found
    domain_name = address.rpartition("@")[2]
    domain = _verified_domain(ctx, domain_name)
    result: Identity | SenderNotVerified
    if domain is not None:
        result = Identity(domain=domain, relay_server=domain.relay_server)
    else:
        single = (
            SenderIdentity.objects.filter(
                organization_id=ctx.server.organization_id, address=address
            )
            .filter(Q(server__isnull=True) | Q(server=ctx.server))
            .first()
        )
        if single is not None and single.status == IdentityStatus.VERIFIED:
            result = Identity(
                domain=None, relay_server=_relay_of_account(ctx.server.organization_id)
            )
        elif single is not None:
            result = SenderNotVerified(
                f"from: {address} is a sender identity awaiting confirmation: follow the "
                "link mailed to it (or resend it), or verify the domain "
                f"{domain_name}",
                details={"from": [f"sender identity {address} (address) is not confirmed yet"]},
            )
        else:
            result = SenderNotVerified(
                f"from: {address} is not a verified sender identity of this account: add "
                f"and verify the domain {domain_name}, or add the address {address} as a "
                "sender identity and confirm it",
                details={
                    "from": [
                        f"no verified sender identity for {domain_name} (domain) or "
                        f"{address} (address)"
                    ]
                },
            )
    ctx.identities[address] = result
    if isinstance(result, SenderNotVerified):
        raise result
    return result


_LOOKUP_CHUNK = 500  # addresses per IN (...): well under SQLite's variable limit


def suppressions_prefetch(ctx: SendContext, recipients: Iterable[str]) -> None:
    """Read the suppression entries of every address not looked up yet, in few queries."""
    missing = {a.lower() for a in recipients} - ctx.suppressions.keys()
    for address in missing:
        ctx.suppressions[address] = set()
    ordered = sorted(missing)
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        rows = Suppression.objects.filter(
            organization_id=ctx.server.organization_id,
            address__in=ordered[start : start + _LOOKUP_CHUNK],
        ).values_list("address", "stream_id")
        for address, stream_id in rows:
            ctx.suppressions[address].add(stream_id)


def _suppressed(
    ctx: SendContext, stream: MessageStream, recipients: Sequence[str]
) -> frozenset[str]:
    """Recipients on the stream's list or the account-wide one (queue/transitions.py)."""
    suppressions_prefetch(ctx, recipients)
    listed = ctx.suppressions
    return frozenset(
        a for a in (r.lower() for r in recipients) if None in listed[a] or stream.pk in listed[a]
    )


def _stream(ctx: SendContext, stream_id: str | None) -> MessageStream:
    if stream_id is None:
        default = ctx.server.default_stream_id
        found = next((s for s in ctx.streams.values() if s.pk == default), None)
        if found is None:  # a server always has one; say so rather than fail obscurely
            raise ValidationFailed.on("stream", "the server has no default stream: name one")
        return found
    stream = ctx.streams.get(stream_id)
    if stream is None:
        known = ", ".join(sorted(k for k, s in ctx.streams.items() if s.kind != StreamKind.INBOUND))
        shown = stream_id if len(stream_id) <= 50 else stream_id[:50] + "…"  # SMTP: one line
        raise ValidationFailed.on("stream", f"no stream {shown!r} on this server ({known})")
    if stream.kind == StreamKind.INBOUND:
        raise ValidationFailed.on("stream", f"{stream_id!r} receives mail: it cannot send")
    return stream


def _return_path_host(identity: Identity) -> str:
    """Where the unsubscribe mailto (and bounces) go: the domain's bounce host; the
    platform's for a single-address identity (we hold no domain of gmail.com's)."""
    if identity.domain is not None:
        return identity.domain.return_path_host
    return str(settings.MAILPLANE["PLATFORM_DOMAIN"])


def message_prepare(*, ctx: SendContext, request: SendRequest) -> Prepared:
    """Check what the request alone cannot tell (identity, stream, size); compose."""
    identity = sender_identity_check(ctx, request.sender.address)
    stream = _stream(ctx, request.stream)
    unsubscribe = broadcast_check(
        stream, recipients=request.recipients, header_names=[name for name, _ in request.headers]
    )
    plan = None
    original_html = request.html
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
        list_unsubscribe=(
            unsubscribe.header(return_path_host=_return_path_host(identity))
            if unsubscribe
            else None
        ),
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
    # The checks read the request's own parts: the destinations as written (before the
    # tracking rewrite hid them), without parsing back what was just composed.
    content = Content(
        text=request.text or None,
        html=original_html or None,
        attachments=[a.filename for a in request.attachments],
        list_unsubscribe=unsubscribe is not None
        or any(name.lower() == "list-unsubscribe" for name, _ in request.headers),
    )
    held = _content_gate(ctx, raw, request.sender.address, request.recipients, stream, content)
    # Checked before the queue (issue 11), so the answer says at once which recipients
    # will get nothing, rather than a silent drop at delivery time.
    return Prepared(
        sender=request.sender.address,
        recipients=list(request.recipients),
        stream=stream,
        identity=identity,
        raw=raw,
        tags=request.tags,
        metadata=request.metadata,
        test_mode=request.test_mode,
        suppressed=_suppressed(ctx, stream, request.recipients),
        unsubscribe=unsubscribe,
        send_at=request.send_at,
        tracking=plan,
        held=held,
    )


def _content_gate(
    ctx: SendContext,
    raw: bytes,
    sender: str,
    recipients: Sequence[str],
    stream: MessageStream,
    content: Content | None = None,
) -> Verdict | None:
    """The server's content filter (shield/), for API and SMTP messages alike: over the
    threshold, `reject` refuses the message (ContentRejected, with the reasons) and
    `hold` returns the verdict, for messages_send to queue it held; None: it passes."""
    if ctx.server.content_filter not in (ContentFilter.REJECT, ContentFilter.HOLD):
        return None
    verdict = content_check(
        raw,
        sender=sender,
        recipients=recipients,
        broadcast=stream.kind == StreamKind.BROADCAST,
        content=content,
    )
    if not verdict.refuses(ctx.server.content_threshold):
        return None
    if ctx.server.content_filter == ContentFilter.REJECT:
        raise content_refusal(verdict)
    return verdict


def _verdict_stored(verdict: Verdict) -> dict[str, Any]:
    """ServerMessage.content_verdict: what the message API shows of a held message."""
    return {
        "score": verdict.score,
        "symbols": [
            {"name": s.name, "score": s.score, "description": s.description}
            for s in sorted(verdict.symbols, key=lambda s: -s.score)
        ],
    }


def _held_symbols(verdict: Verdict) -> str:
    """The held event's detail: each symbol with its score, highest first."""
    listed = [f"{s.name} ({s.score:g})" for s in sorted(verdict.symbols, key=lambda s: -s.score)]
    if verdict.rspamd_action == "reject":
        listed.append("rspamd: reject")
    return ", ".join(listed) or f"score {verdict.score:g}"


def submitted_prepare(
    *,
    ctx: SendContext,
    mail_from: str,
    sender: str,
    recipients: Sequence[str],
    raw: bytes,
    stream_id: str | None,
) -> Prepared:
    """A message submitted over SMTP with a server key: the From header's `sender` must be
    an identity of the account, the stream is the one its header named (or the default).
    `raw` is completed already (trace field, Date, Message-ID: smtp/submission.py)."""
    if len(raw) > MESSAGE_MAX_BYTES:
        # The send API's limit for every message of a server (RFC 3463 X.3.4: too big).
        raise MessageTooLarge(
            f"the message is {len(raw)} bytes, over the limit of {MESSAGE_MAX_BYTES}",
            smtp=SmtpStatus(552, "5.3.4"),
        )
    identity = sender_identity_check(ctx, sender)
    stream = _stream(ctx, stream_id)
    unsubscribe = None
    if raw:  # (an envelope-sender check passes no message)
        # A broadcast stream's rules and one-click fields, as for the API (RFC 8058).
        unsubscribe = broadcast_check(
            stream, recipients=recipients, header_names=list(headers_of(raw).keys())
        )
        if unsubscribe is not None:
            fields = unsubscribe.header(return_path_host=_return_path_host(identity)).fields()
            raw = prepend(raw, fields)
        held = _content_gate(ctx, raw, sender, recipients, stream)
    else:
        held = None
    return Prepared(
        sender=mail_from,
        recipients=list(recipients),
        stream=stream,
        identity=identity,
        raw=raw,
        suppressed=_suppressed(ctx, stream, recipients),
        source=MessageSource.SMTP,
        unsubscribe=unsubscribe,
        held=held,
    )


# Fields a broadcast stream writes itself (RFC 2369, RFC 8058).
UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


def broadcast_check(
    stream: MessageStream, *, recipients: Sequence[str], header_names: Sequence[str]
) -> IssuedToken | None:
    """A broadcast message's unsubscribe token, or StreamRefused (422); None on other
    streams. Plain arguments, so that a message submitted over SMTP can be checked too.

    As Postmark's broadcast streams when Postmark manages unsubscribes (its default and,
    here, the only mode): the stream writes List-Unsubscribe itself and the message's own
    is refused, not silently replaced ("there is not a way to edit the List-Unsubscribe
    headers", Postmark's support article 1299), so the sender learns that its link would
    not be the one mail clients show. On transactional streams the header is the
    sender's own business and passes. One recipient per broadcast message: the link is
    that recipient's (RFC 8058 §3.1), and one link in a message several people read
    would let any of them unsubscribe the others; lists go out as a batch."""
    if stream.kind != StreamKind.BROADCAST:
        return None
    for name in header_names:
        if name.lower() in UNSUBSCRIBE_HEADERS:
            raise StreamRefused(
                f"headers: the broadcast stream {stream.stream_id!r} writes {name} itself "
                "(one-click unsubscribe, RFC 8058): leave it out",
                details={f"headers.{name}": ["set by broadcast streams: leave it out"]},
            )
    if len(recipients) != 1:
        raise StreamRefused(
            f"to: a broadcast message goes to one recipient (it carries that recipient's "
            f"unsubscribe link); send {len(recipients)} messages in a batch",
            details={"to": ["one recipient (to, cc and bcc together) on a broadcast stream"]},
        )
    return unsubscribe_token_issue()


def _dry(server: EmailServer, prepared: Prepared) -> bool:
    """Recorded as delivered and never sent: a sandbox server, or a request's test mode."""
    return server.sandbox or prepared.test_mode


def _held(server: EmailServer, prepared: Prepared) -> bool:
    """Queued held by the content filter. Not a dry message: it is never sent anyway,
    and a release would otherwise send what sandbox promised never to."""
    return prepared.held is not None and not _dry(server, prepared)


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
            mail_from=p.sender,
            recipients=p.recipients,
            raw=p.raw,
            source=p.source,
            relay_server=p.identity.relay_server,
            domain=p.identity.domain,
            priority=p.priority,
            # A dry message is recorded as delivered at once, scheduled or not; a held
            # one waits for an operator, and a release sends it at once.
            send_at=None if _dry(server, p) or _held(server, p) else p.send_at,
        )
        for p in prepared
    ]
    # No savepoint: all or nothing, and nothing here catches a failure to go on with
    # the rest (a savepoint is two more round trips per send on PostgreSQL).
    with data_atomic(savepoint=False):
        messages = message_enqueue_many(requests)
        links = ServerMessage.objects.bulk_create(
            ServerMessage(
                message=m,
                server=server,
                stream=p.stream,
                server_key=server_key,
                tags=p.tags,
                metadata=p.metadata,
                sandbox=_dry(server, p),
                unsubscribe_digest=p.unsubscribe.digest if p.unsubscribe else None,
                content_verdict=_verdict_stored(p.held) if p.held and _held(server, p) else None,
            )
            for m, p in zip(messages, prepared, strict=True)
        )
        tracked_messages_create([(m, p.tracking) for m, p in zip(messages, prepared, strict=True)])
        MessageTag.objects.bulk_create(
            MessageTag(message=link, server=server, tag=tag)
            for link, p in zip(links, prepared, strict=True)
            for tag in p.tags
        )
        MessageMetadata.objects.bulk_create(
            MessageMetadata(message=link, server=server, key=key, value=value)
            for link, p in zip(links, prepared, strict=True)
            for key, value in p.metadata.items()
        )
        suppressed = {m.pk: p.suppressed for m, p in zip(messages, prepared, strict=True)}
        dry = {m.pk for m, p in zip(messages, prepared, strict=True) if _dry(server, p)}
        held = {
            m.pk: p.held
            for m, p in zip(messages, prepared, strict=True)
            if p.held is not None and _held(server, p)
        }
        if dry or held or any(suppressed.values()):
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
                elif (verdict := held.get(row.message_id)) is not None:
                    # Queued, then held (two events, as a scheduled message's): delivery
                    # claims only queued and deferred rows, so it never sees this one.
                    steps.append(
                        Transition(
                            row=row,
                            event=EventType.HELD,
                            status=RecipientStatus.HELD,
                            reply=HELD_REPLY.format(
                                score=verdict.score, symbols=_held_symbols(verdict)
                            ),
                            detail=_held_symbols(verdict),
                        )
                    )
            transitions_apply(steps, now=timezone.now())
    return [
        Sent(
            message=m,
            stream=p.stream,
            recipients=list(p.recipients),
            sandbox=_dry(server, p),
            suppressed=[a for a in p.recipients if a.lower() in p.suppressed],
            send_at=None if _dry(server, p) or _held(server, p) else p.send_at,
            held=_held(server, p),
        )
        for m, p in zip(messages, prepared, strict=True)
    ]


def messages_send_checked(
    *,
    server: EmailServer,
    prepared: Sequence[Prepared],
    server_key: ServerKey | None = None,
    now: datetime | None = None,
) -> list[Sent | DomainError]:
    """messages_send behind the reputation checks (reputation/): a paused server or key
    refuses the whole request (SendingPaused); a key in `refuse` mode has its messages
    reserved within its own and its server's caps in the enqueue's transaction, and
    those that do not fit come back as their refusal (OverCap: until when), in place."""
    sending_pause_check(server=server, server_key=server_key)
    with data_atomic():
        waits = caps_reserve(
            server=server,
            server_key=server_key,
            counts=[len(p.recipients) for p in prepared],
            now=now or timezone.now(),
        )
        admitted = [p for p, wait in zip(prepared, waits, strict=True) if wait is None]
        sent = iter(messages_send(server=server, prepared=admitted, server_key=server_key))
    return [next(sent) if wait is None else wait for wait in waits]


def message_send(
    *, server: EmailServer, request: SendRequest, server_key: ServerKey | None = None
) -> Sent:
    prepared = message_prepare(ctx=SendContext.load(server), request=request)
    [sent] = messages_send_checked(server=server, prepared=[prepared], server_key=server_key)
    if isinstance(sent, DomainError):
        raise sent
    return sent


def messages_send_batch(
    *, server: EmailServer, items: Any, server_key: ServerKey | None = None
) -> list[Sent | DomainError]:
    """A batch request's messages: one result per item, in order, the refusal of an item
    in its place (it stops no other); the accepted ones queued in one transaction. A body
    that is no batch at all is refused whole (ValidationFailed)."""
    if not isinstance(items, list):
        raise ValidationFailed.on("body", "must be a JSON array of messages")
    if not items:
        raise ValidationFailed.on("body", "must hold at least one message")
    if len(items) > BATCH_MAX:
        raise ValidationFailed.on(
            "body", f"holds {len(items)} messages: at most {BATCH_MAX} per batch"
        )
    ctx = SendContext.load(server)
    parsed: list[SendRequest | DomainError] = []
    for item in items:
        try:
            parsed.append(send_request_parse(item))
        except DomainError as exc:
            parsed.append(exc)
    suppressions_prefetch(
        ctx, (a for r in parsed if isinstance(r, SendRequest) for a in r.recipients)
    )
    checked: list[Prepared | DomainError] = []
    for request in parsed:
        if isinstance(request, DomainError):
            checked.append(request)
            continue
        try:
            checked.append(message_prepare(ctx=ctx, request=request))
        except DomainError as exc:
            checked.append(exc)
    accepted = [p for p in checked if isinstance(p, Prepared)]
    sent = iter(messages_send_checked(server=server, prepared=accepted, server_key=server_key))
    return [one if isinstance(one, DomainError) else next(sent) for one in checked]
