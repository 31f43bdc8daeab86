"""Putting messages on the queue. Callers answer 250/2xx only after this returns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import SMTP

from django.db.models import Q
from django.utils import timezone

from mailplane.core.errors import ValidationFailed
from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.message.headers import header_section, headers_of, unfold
from mailplane.queue.models import MessageSource, OutboundMessage, Priority, WaitReason
from mailplane.queue.transitions import (
    NewMessage,
    messages_enqueue,
    queue_cancel,
    queue_release,
    queue_retry,
)
from mailplane.queue.waiting import REASONS, QueueFilter, server_queue
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization

# How long temporary failures are retried before the message bounces (Postfix: 5 days;
# the delivery issue asks for 72 hours by default).
DEFAULT_EXPIRY = timedelta(hours=72)


# A value the SMTP policy would hand back unchanged once unfolded: printable ASCII with
# no blank at either end and no encoded word (RFC 2047) to decode.
_PLAIN_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def _headers(raw: bytes) -> tuple[str, str]:
    """(Message-ID, Subject), each cut to RFC 5322's 998-character line limit.

    The Message-ID as written, unfolded (RFC 5322 §2.2.3): the header registry's msg-id
    parse raised on malformed ones (`<`), and rewrote others. The Subject decoded (RFC
    2047); the registry's parse was most of enqueueing a short message, so a value with
    nothing to decode is read with compat32 and unfolded, the same text
    (tests/queue/test_enqueue.py), and only the rest takes the parse.
    """
    fields = headers_of(raw)
    message_id = unfold(str(fields.get("Message-ID", ""))).strip(" \t")
    subject = unfold(str(fields.get("Subject", "")))
    if "=?" in subject or not _PLAIN_VALUE.fullmatch(subject):
        parsed = BytesHeaderParser(policy=SMTP).parsebytes(header_section(raw), headersonly=True)
        subject = str(parsed.get("Subject", ""))
    return message_id[:998], subject[:998]


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """One message for `message_enqueue_many`; the fields are message_enqueue's arguments."""

    organization: Organization
    mail_from: str
    recipients: Sequence[str]
    raw: bytes
    source: str = MessageSource.SMTP
    mailbox: Mailbox | None = None
    relay_server: RelayServer | None = None
    domain: Domain | None = None
    expiry: timedelta = DEFAULT_EXPIRY
    priority: Priority = Priority.INTERACTIVE  # the claim's lane (delivery/claims.py)
    send_at: datetime | None = None  # held until then; the expiry counts from it


def message_enqueue_many(requests: Sequence[EnqueueRequest]) -> list[OutboundMessage]:
    """Persist several messages, their bodies, queue rows and events in ONE transaction.

    All or nothing: either every message is committed when this returns, or it raises and
    none is (group commit: one commit, one fsync, for many SMTP sessions). The result is in
    the order of `requests`, each with its primary key set.
    """
    now = timezone.now()
    new: list[NewMessage] = []
    for req in requests:
        message_id, subject = _headers(req.raw)
        mailbox = req.mailbox
        message = OutboundMessage(
            organization=req.organization,
            mailbox=mailbox,
            relay_server=req.relay_server or (mailbox.relay_server if mailbox else None),
            domain=req.domain or (mailbox.domain if mailbox else None),
            source=req.source,
            mail_from=req.mail_from,
            message_id=message_id,
            subject=subject,
            size=len(req.raw),
        )
        start = req.send_at or now
        new.append(
            NewMessage(
                message,
                req.raw,
                req.recipients,
                start + req.expiry,
                priority=req.priority,
                send_at=req.send_at,
            )
        )
    return messages_enqueue(new, now=now)


def message_enqueue(
    *,
    organization: Organization,
    mail_from: str,
    recipients: Sequence[str],
    raw: bytes,
    source: str = MessageSource.SMTP,
    mailbox: Mailbox | None = None,
    relay_server: RelayServer | None = None,
    domain: Domain | None = None,
    expiry: timedelta = DEFAULT_EXPIRY,
) -> OutboundMessage:
    """Persist a message and one queue row per recipient in a single transaction."""
    request = EnqueueRequest(
        organization=organization,
        mail_from=mail_from,
        recipients=recipients,
        raw=raw,
        source=source,
        mailbox=mailbox,
        relay_server=relay_server,
        domain=domain,
        expiry=expiry,
    )
    return message_enqueue_many([request])[0]


# --- an operator's bulk actions on a server's queue (queue/waiting.py) -----------------

# At most this many recipients per call: a bounded transaction and answer. The answer's
# `more` says whether matching rows are left; the caller repeats the call to go on.
BULK_MAX = 10_000

# Which waiting reasons each action applies to (queue/transitions.py says what it does).
ACTION_REASONS: dict[str, tuple[str, ...]] = {
    # What holds a message until someone acts or a window opens that the account set.
    "release": (WaitReason.HELD, WaitReason.PAUSED, WaitReason.CAP),
    # What waits on a backoff or on a receiver's or pool's limit: try again now.
    "retry": (WaitReason.RETRY, WaitReason.THROTTLED, WaitReason.POOL, WaitReason.WARMUP),
    # Anything not in a worker's hands.
    "cancel": tuple(r for r in REASONS if r != WaitReason.SENDING),
}
_ACTIONS = {"release": queue_release, "retry": queue_retry, "cancel": queue_cancel}


@dataclass(frozen=True, slots=True)
class QueueActionResult:
    action: str
    changed: int  # rows the action moved
    skipped: int  # matched, but moved on before the action took them (sent, claimed)
    more: bool  # more rows match than BULK_MAX: call again


def queue_action(
    *,
    action: str,
    server_id: int | None,
    where: QueueFilter,
    now: datetime,
    actor: str,
    limit: int = BULK_MAX,
) -> QueueActionResult:
    """Release, retry or cancel the waiting recipients of a server (None: of every server)
    that match `where` and the action's reasons, at most `limit` of them, in claim order.

    A `reason` the action does not apply to is a ValidationFailed naming `reason`, rather
    than a silent zero: `release` of backed-off mail is `retry`."""
    if action not in _ACTIONS:
        raise ValidationFailed.on("action", f"one of {', '.join(_ACTIONS)}")
    reasons = ACTION_REASONS[action]
    if where.reason is not None and where.reason not in reasons:
        raise ValidationFailed.on(
            "reason", f"{action} applies to waiting reasons {', '.join(reasons)}"
        )
    rows = server_queue(server_id=server_id, where=where, now=now).filter(
        Q(waiting_reason__in=reasons)  # (Q: an annotation the type checker cannot see)
    )
    ids = list(rows.values_list("pk", flat=True)[: limit + 1])
    more = len(ids) > limit
    ids = ids[:limit]
    changed = _ACTIONS[action](ids=ids, now=now, actor=actor)
    return QueueActionResult(action, changed, len(ids) - changed, more)
