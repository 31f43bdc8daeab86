"""The one owner of message state: every change of a queued recipient's status, every
delivery event and every suppression is written here, and nowhere else.

Each call is one transaction that changes the rows AND appends their events (a
transactional outbox): a crash before commit leaves neither, after commit both. Events
are numbered from `EventSequence` (gap-free, in commit order), so the consumers of
queue/events.py (webhooks, analytics, the logs API) read one ordered stream and resume
from a cursor without missing or inventing an event.

Transitions:
    enqueue          (new rows)               → queued        messages_enqueue
    record outcome   queued/deferred          → delivered, deferred, bounced, failed,
                                                suppressed    transitions_apply(claimed_by=…)
    late outcome     delivered/queued/deferred → bounced, failed, delivered
                                                              transitions_apply
    recipient report (status unchanged)       → complained, unsubscribed + suppression
    engagement       (status unchanged)       → opened, clicked   engagement_record
The claim (delivery/claims.py) takes a lease on rows; it changes no status and writes no
event.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction

from mailplane.queue.models import (
    DeliveryEvent,
    EventSequence,
    EventType,
    MessageBody,
    OutboundMessage,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
    SuppressionReason,
)

log = logging.getLogger("mailplane.queue")

# SQLite's limit on bound variables per statement (999 on old builds), with room to spare.
_CHUNK = 500
# The queue keeps RFC 5321 replies this long (last_reply and suppression detail).
_REPLY_MAX = 2000


def _sequence_take(count: int) -> int:
    """Reserve `count` event numbers and return the first.

    The UPSERT locks the sequence row until the caller's transaction ends, so appenders
    take their numbers one transaction after another: a number is visible only once every
    smaller one is (commit order), and a rollback returns its numbers (gap-free). Called
    last in each transaction, so the lock is held for the commit only. The row is created
    on first use (a test database flush empties the table)."""
    table = EventSequence._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, last) VALUES (1, %s) "
            f"ON CONFLICT (id) DO UPDATE SET last = {table}.last + excluded.last "
            "RETURNING last",
            [count],
        )
        (last,) = cursor.fetchone()
    return int(last) - count + 1


def _events_append(events: list[DeliveryEvent]) -> None:
    """Number and insert events; the caller's transaction must be open."""
    if not events:
        return
    first = _sequence_take(len(events))
    for offset, event in enumerate(events):
        event.seq = first + offset
    DeliveryEvent.objects.bulk_create(events)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message for `messages_enqueue`: its unsaved row, bytes and recipients."""

    message: OutboundMessage
    raw: bytes
    recipients: Sequence[str]
    expires_at: datetime


def messages_enqueue(new: Sequence[NewMessage], *, now: datetime) -> list[OutboundMessage]:
    """Insert messages, bodies, one queued row per recipient and a `queued` event each, in
    ONE transaction (all or nothing). Returns the messages with primary keys set."""
    if not new:
        return []
    with transaction.atomic():
        # PostgreSQL and SQLite >= 3.35 return the new keys from a bulk INSERT.
        messages = OutboundMessage.objects.bulk_create([n.message for n in new])
        if any(m.pk is None for m in messages):
            raise RuntimeError("the database did not return primary keys from bulk_create")
        MessageBody.objects.bulk_create(
            MessageBody(message=m, raw=n.raw) for m, n in zip(messages, new, strict=True)
        )
        recipients = [
            QueuedRecipient(
                message=m,
                rcpt_to=rcpt,
                rcpt_domain=rcpt.rpartition("@")[2].lower(),
                status=RecipientStatus.QUEUED,
                next_attempt_at=now,
                expires_at=n.expires_at,
            )
            for m, n in zip(messages, new, strict=True)
            for rcpt in n.recipients
        ]
        rows = QueuedRecipient.objects.bulk_create(recipients)
        _events_append(
            [
                DeliveryEvent(
                    organization_id=row.message.organization_id,
                    message=row.message,
                    recipient=row,
                    type=EventType.QUEUED,
                )
                for row in rows
            ]
        )
    return messages


@dataclass(frozen=True, slots=True)
class Transition:
    """One recipient's step: the event it leaves and, unless `status` is None (a report
    about a row that keeps its status), the row's new state. The row's claim is released.
    """

    row: QueuedRecipient  # with .message loaded
    event: EventType
    status: RecipientStatus | None
    reply: str = ""
    remote_host: str = ""
    detail: str = ""
    attempts: int | None = None  # None: unchanged
    next_attempt_at: datetime | None = None  # None: unchanged
    suppress: SuppressionReason | None = None  # the address is suppressed for this reason
    bounce_class: str = ""  # deferrals and bounces: delivery/bounce_classes.py


def _owned(ids: list[int], worker_id: str) -> set[int]:
    """The rows among `ids` still claimed by `worker_id`, locked until the transaction
    ends (PostgreSQL; SQLite has one writer anyway)."""
    owned: set[int] = set()
    for i in range(0, len(ids), _CHUNK):
        owned.update(
            QueuedRecipient.objects.select_for_update()
            .filter(pk__in=ids[i : i + _CHUNK], claimed_by=worker_id)
            .values_list("pk", flat=True)
        )
    return owned


def transitions_apply(
    transitions: Sequence[Transition], *, now: datetime, claimed_by: str | None = None
) -> list[Transition]:
    """Apply transitions in ONE transaction: row states, events, suppressions.

    claimed_by: only rows that worker still holds move (a worker whose lease ran out lost
    the row to another, whose record wins); the others are dropped and logged. Callers
    without a claim (late outcomes) lock the rows themselves. Returns what was applied.

    Rows that end the same way (status, attempts, reply, retry time: typically a batch of
    deliveries) share one UPDATE: a query per row was most of the database thread's time.
    """
    applied: list[Transition] = []
    # (status, attempts, next attempt, reply) -> row ids
    updates: dict[tuple[str, int | None, datetime | None, str], list[int]] = defaultdict(list)
    events: list[DeliveryEvent] = []
    suppressions: list[Suppression] = []
    with transaction.atomic():
        owned = None
        if claimed_by is not None:
            owned = _owned([t.row.pk for t in transitions], claimed_by)
        for t in transitions:
            row = t.row
            if owned is not None and row.pk not in owned:
                log.warning("lost claim on recipient %s; outcome %s dropped", row.pk, t.event)
                continue
            applied.append(t)
            if t.status is not None:
                key = (t.status, t.attempts, t.next_attempt_at, t.reply[:_REPLY_MAX])
                updates[key].append(row.pk)
                row.status = t.status
            events.append(
                DeliveryEvent(
                    organization_id=row.message.organization_id,
                    message_id=row.message_id,
                    recipient_id=row.pk,
                    type=t.event,
                    remote_reply=t.reply,
                    remote_host=t.remote_host,
                    detail=t.detail,
                    bounce_class=t.bounce_class,
                )
            )
            if t.suppress is not None:
                suppressions.append(
                    Suppression(
                        organization_id=row.message.organization_id,
                        address=row.rcpt_to.lower(),
                        reason=t.suppress,
                        detail=t.reply[:_REPLY_MAX],
                        message_id=row.message_id,
                    )
                )
        for (status, attempts, next_attempt, reply), ids in updates.items():
            fields: dict[str, object] = {
                "status": status,
                "last_reply": reply,
                "claimed_by": "",
                "claimed_until": None,
                "updated_at": now,
            }
            if attempts is not None:
                fields["attempts"] = attempts
            if next_attempt is not None:
                fields["next_attempt_at"] = next_attempt
            for i in range(0, len(ids), _CHUNK):
                rows = QueuedRecipient.objects.filter(pk__in=ids[i : i + _CHUNK])
                if claimed_by is not None:
                    rows = rows.filter(claimed_by=claimed_by)
                rows.update(**fields)
        # A listed address keeps its first reason.
        Suppression.objects.bulk_create(suppressions, ignore_conflicts=True)
        _events_append(events)  # last: the sequence lock is held until commit only
    return applied


# How engagement_record describes a hit in the event's `detail`.
FIRST = "first"  # the recipient's first human open (or click) of the message
REPEAT = "repeat"  # a later one
MACHINE = "machine:"  # + the reason (tracking/machines.py): never counted as a person's


def engagement_record(
    *,
    message: OutboundMessage,
    recipient_id: int | None,
    event: EventType,
    machine: str = "",
    url: str = "",
) -> DeliveryEvent:
    """An `opened` or `clicked` event, in one transaction with its number.

    detail: `first`, `repeat` or `machine:<reason>`, then for a click a space and the
    URL. First means no human event of this type for this message and recipient before
    it: machine fetches (Apple MPP prefetches, link scanners) never make one, so the
    person's own later open is still the first. The message row is locked while the
    stream is read, so two concurrent opens cannot both be first (PostgreSQL; SQLite has
    one writer)."""
    if event not in (EventType.OPENED, EventType.CLICKED):
        raise ValueError(f"{event} is not an engagement event")
    with transaction.atomic():
        OutboundMessage.objects.select_for_update().filter(pk=message.pk).first()
        if machine:
            kind = MACHINE + machine
        else:
            earlier = DeliveryEvent.objects.filter(
                message_id=message.pk,
                recipient_id=recipient_id,
                type=event,
                detail__startswith=FIRST,
            ).exists()
            kind = REPEAT if earlier else FIRST
        record = DeliveryEvent(
            organization_id=message.organization_id,
            message_id=message.pk,
            recipient_id=recipient_id,
            type=event,
            detail=f"{kind} {url}" if url else kind,
        )
        _events_append([record])
    return record
