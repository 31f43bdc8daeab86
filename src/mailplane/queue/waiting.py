"""Why a waiting recipient is not sent yet, and until when: the queue view's one reading.

Postal's users fix stuck queues by hand in a console; here the reason is a column the
API and the CLI filter on, computed in SQL (one CASE over the row, its server's and its
key's pause) so that a filter on it is a query, not a scan in Python. First match wins:

    reason     when                                          until
    scheduled  status scheduled, send time ahead             the send time
    held       status held (the content filter held it)      null: until released
    sending    a delivery worker holds it (live lease)       the lease's end
    paused     its server or key is paused now (and no        null: until resumed
               operator released it)
    due        its attempt time has come                     its attempt time (past)
    cap        its volume cap was full (delivery held it)    when the window reopens
    warmup     its pool's warm-up caps were full             when the pool has room
    pool       its pool had no enabled address               its next attempt
    throttled  the receiver answered with a rate limit       its next attempt
    retry      backing off after a temporary failure         its next attempt

cap, warmup, pool and throttled are what delivery wrote on the row when it held or
deferred it (QueuedRecipient.wait_reason, delivery/processor.py); everything else is read
from the state as it is now. A per-destination connection cap (delivery/limits.py) makes
a recipient wait seconds inside a worker, under its lease: it shows as `sending`.

The server and key are reached through the message's `server_link` by name: servers
imports the queue, so the queue imports nothing of servers (as queue/transitions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    F,
    Q,
    QuerySet,
    TextField,
    Value,
    When,
)

from mailplane.queue.models import QueuedRecipient, RecipientStatus, WaitReason
from mailplane.queue.transitions import WAITING

# What the queue view lists and filters on (`released` is stored only, never shown).
REASONS = [r.value for r in WaitReason if r is not WaitReason.RELEASED]
_STORED = [WaitReason.CAP, WaitReason.WARMUP, WaitReason.POOL, WaitReason.THROTTLED]
_SERVER_PAUSED = Q(message__server_link__server__paused_at__isnull=False)
_KEY_PAUSED = Q(message__server_link__server_key__paused_at__isnull=False)


def _reason(now: datetime) -> Case:
    return Case(
        When(
            status=RecipientStatus.SCHEDULED,
            next_attempt_at__gt=now,
            then=Value(WaitReason.SCHEDULED.value),
        ),
        When(status=RecipientStatus.HELD, then=Value(WaitReason.HELD.value)),
        When(claimed_until__gt=now, then=Value(WaitReason.SENDING.value)),
        # Released by an operator: its next delivery passes the pause (reputation/caps.py).
        When(
            wait_reason=WaitReason.RELEASED,
            next_attempt_at__lte=now,
            then=Value(WaitReason.DUE.value),
        ),
        When(_SERVER_PAUSED | _KEY_PAUSED, then=Value(WaitReason.PAUSED.value)),
        When(next_attempt_at__lte=now, then=Value(WaitReason.DUE.value)),
        When(wait_reason__in=_STORED, then=F("wait_reason")),
        default=Value(WaitReason.RETRY.value),
        output_field=CharField(),
    )


def _until() -> Case:
    return Case(
        When(waiting_reason__in=[WaitReason.HELD, WaitReason.PAUSED], then=Value(None)),
        When(waiting_reason=WaitReason.SENDING, then=F("claimed_until")),
        default=F("next_attempt_at"),
        output_field=DateTimeField(),
    )


def _detail() -> Case:
    return Case(
        When(
            Q(waiting_reason=WaitReason.PAUSED) & _KEY_PAUSED,
            then=F("message__server_link__server_key__paused_reason"),
        ),
        When(
            waiting_reason=WaitReason.PAUSED,
            then=F("message__server_link__server__paused_reason"),
        ),
        When(
            waiting_reason__in=[WaitReason.SCHEDULED, WaitReason.DUE, WaitReason.SENDING],
            then=Value(""),
        ),
        default=F("last_reply"),
        output_field=TextField(),
    )


def recipients_waiting(
    rows: QuerySet[QueuedRecipient], *, now: datetime
) -> QuerySet[QueuedRecipient]:
    """`rows` that still wait to be sent, each annotated with `waiting_reason`,
    `waiting_until` (None: until an operator acts) and `waiting_detail` (the pause's
    reason, or the reply that held or deferred it)."""
    return (
        rows.filter(status__in=WAITING)
        .annotate(waiting_reason=_reason(now))
        .annotate(waiting_until=_until(), waiting_detail=_detail())
    )


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """Which waiting recipients of one server a queue read or bulk action is about.
    Every field narrows; None: any."""

    reason: str | None = None  # one of REASONS
    stream: str | None = None  # a stream id of the server (`outbound`)
    recipient: str | None = None  # an address, any case
    recipient_domain: str | None = None
    server_key: int | None = None  # the key it was sent with
    created_from: datetime | None = None
    created_to: datetime | None = None  # excluded

    def narrows(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__slots__)


def server_queue(
    *, server_id: int | None, where: QueueFilter, now: datetime
) -> QuerySet[QueuedRecipient]:
    """The waiting recipients of one email server's messages (None: every server's, the
    operator's CLI), matching `where`, in the order the claim takes them."""
    rows = QueuedRecipient.objects.filter(message__server_link__isnull=False)
    if server_id is not None:
        rows = rows.filter(message__server_link__server_id=server_id)
    if where.stream is not None:
        rows = rows.filter(message__server_link__stream__stream_id=where.stream)
    if where.recipient is not None:
        rows = rows.filter(rcpt_to__iexact=where.recipient)
    if where.recipient_domain is not None:
        rows = rows.filter(rcpt_domain=where.recipient_domain.lower())
    if where.server_key is not None:
        rows = rows.filter(message__server_link__server_key_id=where.server_key)
    if where.created_from is not None:
        rows = rows.filter(message__created_at__gte=where.created_from)
    if where.created_to is not None:
        rows = rows.filter(message__created_at__lt=where.created_to)
    waiting = recipients_waiting(rows, now=now)
    if where.reason is not None:
        waiting = waiting.filter(Q(waiting_reason=where.reason))  # (Q: an annotation)
    return waiting.select_related("message", "message__server_link__stream").order_by(
        "next_attempt_at", "id"
    )


def message_waiting(*, message_id: int, now: datetime) -> dict[int, dict[str, object]]:
    """Each waiting recipient of one message: {reason, until, detail}, by recipient id."""
    rows = recipients_waiting(QueuedRecipient.objects.filter(message_id=message_id), now=now)
    return {
        row.pk: {
            "reason": row.waiting_reason,  # type: ignore[attr-defined]
            "until": row.waiting_until,  # type: ignore[attr-defined]
            "detail": row.waiting_detail,  # type: ignore[attr-defined]
        }
        for row in rows
    }
