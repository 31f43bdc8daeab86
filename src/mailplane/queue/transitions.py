"""The one owner of message state: every change of a queued recipient's status, every
delivery event and every suppression is written here, and nowhere else.

Each call is one transaction that changes the rows AND appends their events (a
transactional outbox): a crash before commit leaves neither, after commit both. Events
are numbered from `EventSequence` (gap-free, in commit order), so the consumers of
queue/events.py (webhooks, analytics, the logs API) read one ordered stream and resume
from a cursor without missing or inventing an event.

Transitions:
    enqueue          (new rows)               → queued        messages_enqueue
                                              → scheduled     (with a send time: queued,
                                                              then scheduled, two events)
    content hold     queued (new, uncommitted) → held         transitions_apply (the send
                                                              service, in the enqueue's
                                                              transaction: MI Shield's hold)
    reschedule       scheduled (not yet due)  → scheduled     scheduled_move
    cancel           scheduled (not yet due)  → cancelled     scheduled_move
    operator release held/queued/deferred     → queued, due now, past cap and pause holds
                                                              queue_release
    operator retry   deferred                 → deferred, due now            queue_retry
    operator cancel  queued/deferred/scheduled/held → cancelled              queue_cancel
                     (the three skip rows a delivery worker holds: it records them)
    record outcome   queued/deferred          → delivered, deferred, bounced, failed,
                                                suppressed    transitions_apply(claimed_by=…)
    late outcome     delivered/queued/deferred → bounced, failed, delivered
                                                              transitions_apply
    recipient report (status unchanged)       → complained, unsubscribed + suppression
                                                              transitions_apply,
                                                              unsubscribe_record (one-click)
    engagement       (status unchanged)       → opened, clicked   engagement_record
    suppression list  manual add / remove      suppressions_add, suppressions_remove

Where a suppression holds: a message sent through an email server suppresses the address
on that server's stream only (Postmark's per-stream lists), and only if the server's
auto_suppress_bounces / auto_suppress_complaints toggle allows it (seed 004); any other
message (a mailbox's) on the whole account. `_suppression_scopes` reads the server link by
its relation name: servers imports the queue, so the queue imports nothing of servers.
The claim (delivery/claims.py) takes a lease on rows; it changes no status and writes no
event.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connections, router
from django.db.models import Q

from mailplane.cells.routing import data_atomic
from mailplane.queue.models import (
    DeliveryEvent,
    EventSequence,
    EventType,
    MessageBody,
    OutboundMessage,
    Priority,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
    SuppressionReason,
    WaitReason,
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
    # The account's cell's sequence (the send API runs in the control plane).
    with connections[router.db_for_write(EventSequence)].cursor() as cursor:
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
    priority: Priority = Priority.INTERACTIVE
    send_at: datetime | None = None  # held until then (status scheduled); None: due now


def _when(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def messages_enqueue(new: Sequence[NewMessage], *, now: datetime) -> list[OutboundMessage]:
    """Insert messages, bodies, one queued row per recipient and a `queued` event each, in
    ONE transaction (all or nothing). Returns the messages with primary keys set.

    A message with a send time waits in the queue itself (status scheduled, next attempt
    at the send time: the claim finds it due then), not in a sleeping task; its rows get
    a `scheduled` event after the `queued` one."""
    if not new:
        return []
    with data_atomic():
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
                status=RecipientStatus.SCHEDULED if n.send_at else RecipientStatus.QUEUED,
                priority=n.priority,
                next_attempt_at=n.send_at or now,
                expires_at=n.expires_at,
            )
            for m, n in zip(messages, new, strict=True)
            for rcpt in n.recipients
        ]
        rows = QueuedRecipient.objects.bulk_create(recipients)
        events = []
        for row in rows:
            events.append(
                DeliveryEvent(
                    organization_id=row.message.organization_id,
                    message=row.message,
                    recipient=row,
                    type=EventType.QUEUED,
                )
            )
            if row.status == RecipientStatus.SCHEDULED:
                events.append(
                    DeliveryEvent(
                        organization_id=row.message.organization_id,
                        message=row.message,
                        recipient=row,
                        type=EventType.SCHEDULED,
                        detail=f"until {_when(row.next_attempt_at)}",
                    )
                )
        _events_append(events)
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
    wait_reason: str = ""  # why the row waits, where its state alone does not say


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


@dataclass(frozen=True, slots=True)
class _Scope:
    stream_id: int | None
    bounces: bool  # the server's auto_suppress_bounces (True for mailbox mail)
    complaints: bool


_ACCOUNT_WIDE = _Scope(None, True, True)


def _suppression_scopes(message_ids: set[int]) -> dict[int, _Scope]:
    """Each message's suppression scope: its server's stream and toggles, or the account."""
    scopes: dict[int, _Scope] = {}
    ids = sorted(message_ids)
    for i in range(0, len(ids), _CHUNK):
        rows = OutboundMessage.objects.filter(pk__in=ids[i : i + _CHUNK]).values_list(
            "pk",
            "server_link__server_id",
            "server_link__stream_id",
            "server_link__server__auto_suppress_bounces",
            "server_link__server__auto_suppress_complaints",
        )
        for pk, server_id, stream_id, bounces, complaints in rows:
            if server_id is None:
                scopes[pk] = _ACCOUNT_WIDE
            else:
                scopes[pk] = _Scope(int(stream_id), bool(bounces), bool(complaints))
    return scopes


def _suppression_allowed(scope: _Scope, reason: SuppressionReason) -> bool:
    if reason == SuppressionReason.HARD_BOUNCE:
        return scope.bounces
    if reason == SuppressionReason.COMPLAINT:
        return scope.complaints
    return True  # an unsubscribe is the recipient's wish: always honoured


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    """A suppression added by hand (the suppressions API): stream None is account-wide."""

    organization_id: int
    address: str
    reason: SuppressionReason
    stream_id: int | None = None
    detail: str = ""


def suppressions_add(entries: Sequence[SuppressionEntry]) -> None:
    """Insert suppressions; an address already listed in the same scope keeps its entry
    (and its first reason)."""
    if entries:
        Suppression.objects.bulk_create(
            [
                Suppression(
                    organization_id=e.organization_id,
                    address=e.address.lower(),
                    reason=e.reason,
                    stream_id=e.stream_id,
                    detail=e.detail[:_REPLY_MAX],
                )
                for e in entries
            ],
            ignore_conflicts=True,
        )


def suppressions_remove(*, organization_id: int, ids: Sequence[int]) -> int:
    """Reactivate addresses: delete these suppressions of this organization. Returns how
    many went."""
    deleted, _ = Suppression.objects.filter(organization_id=organization_id, pk__in=ids).delete()
    return deleted


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
    # (status, attempts, next attempt, reply, wait reason) -> row ids
    updates: dict[tuple[str, int | None, datetime | None, str, str], list[int]] = defaultdict(list)
    events: list[DeliveryEvent] = []
    suppressions: list[Suppression] = []
    with data_atomic():
        owned = None
        if claimed_by is not None:
            owned = _owned([t.row.pk for t in transitions], claimed_by)
        scopes = _suppression_scopes({t.row.message_id for t in transitions if t.suppress})
        for t in transitions:
            row = t.row
            if owned is not None and row.pk not in owned:
                log.warning("lost claim on recipient %s; outcome %s dropped", row.pk, t.event)
                continue
            applied.append(t)
            if t.status is not None:
                key = (
                    t.status,
                    t.attempts,
                    t.next_attempt_at,
                    t.reply[:_REPLY_MAX],
                    t.wait_reason,
                )
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
            scope = scopes.get(row.message_id, _ACCOUNT_WIDE)
            if t.suppress is not None and _suppression_allowed(scope, t.suppress):
                suppressions.append(
                    Suppression(
                        organization_id=row.message.organization_id,
                        address=row.rcpt_to.lower(),
                        reason=t.suppress,
                        detail=t.reply[:_REPLY_MAX],
                        message_id=row.message_id,
                        stream_id=scope.stream_id,
                    )
                )
        for (status, attempts, next_attempt, reply, wait), ids in updates.items():
            fields: dict[str, object] = {
                "status": status,
                "last_reply": reply,
                "wait_reason": wait,
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


def scheduled_move(
    *, message_id: int, now: datetime, send_at: datetime | None, expires_at: datetime | None
) -> int:
    """Move (send_at given) or cancel (None) a scheduled message's rows that are not yet
    due; return how many moved (0: nothing of it is scheduled any more).

    Only rows whose send time is still ahead are touched: the claim takes rows once due
    (next_attempt_at <= now), so none of these can be in a worker's hands, and a move never
    races a send. The rows are locked until the transaction ends (PostgreSQL)."""
    with data_atomic():
        rows = list(
            QueuedRecipient.objects.select_for_update()
            .filter(
                message_id=message_id, status=RecipientStatus.SCHEDULED, next_attempt_at__gt=now
            )
            .select_related("message")
            .order_by("pk")
        )
        if not rows:
            return 0
        ids = [row.pk for row in rows]
        if send_at is None:
            fields: dict[str, object] = {"status": RecipientStatus.CANCELLED}
            event, detail = EventType.CANCELLED, "cancelled before its send time"
        else:
            fields = {"next_attempt_at": send_at, "expires_at": expires_at}
            event, detail = EventType.SCHEDULED, f"moved to {_when(send_at)}"
        QueuedRecipient.objects.filter(pk__in=ids).update(
            **fields, claimed_by="", claimed_until=None, updated_at=now
        )
        _events_append(
            [
                DeliveryEvent(
                    organization_id=row.message.organization_id,
                    message_id=row.message_id,
                    recipient_id=row.pk,
                    type=event,
                    detail=detail,
                )
                for row in rows
            ]
        )
    return len(rows)


# --- an operator's bulk actions on waiting rows (queue/waiting.py picks them) ----------

WAITING = (
    RecipientStatus.QUEUED,
    RecipientStatus.DEFERRED,
    RecipientStatus.SCHEDULED,
    RecipientStatus.HELD,
)


def _free_rows(ids: Sequence[int], statuses: Sequence[str], now: datetime) -> list[QueuedRecipient]:
    """Those of `ids` still in one of `statuses` and in no worker's hands, locked until the
    transaction ends (PostgreSQL; SQLite has one writer). A row under a live lease is
    being sent: its worker records the outcome, and an action here would race it (the
    claim's SKIP LOCKED passes over the rows locked here, so none is claimed meanwhile)."""
    rows: list[QueuedRecipient] = []
    ordered = sorted(ids)
    for i in range(0, len(ordered), _CHUNK):
        rows += list(
            QueuedRecipient.objects.select_for_update()
            .filter(pk__in=ordered[i : i + _CHUNK], status__in=statuses)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .select_related("message")
            .order_by("pk")
        )
    return rows


def _bulk(
    ids: Sequence[int],
    *,
    statuses: Sequence[str],
    fields: dict[str, object],
    event: EventType,
    detail: str,
    now: datetime,
) -> int:
    with data_atomic():
        rows = _free_rows(ids, statuses, now)
        if not rows:
            return 0
        pks = [row.pk for row in rows]
        for i in range(0, len(pks), _CHUNK):
            QueuedRecipient.objects.filter(pk__in=pks[i : i + _CHUNK]).update(
                **fields, claimed_by="", claimed_until=None, updated_at=now
            )
        _events_append(
            [
                DeliveryEvent(
                    organization_id=row.message.organization_id,
                    message_id=row.message_id,
                    recipient_id=row.pk,
                    type=event,
                    detail=detail,
                )
                for row in rows
            ]
        )
    return len(rows)


def queue_release(*, ids: Sequence[int], now: datetime, actor: str) -> int:
    """An operator's release: held rows (content filter, volume cap, pause) are due now,
    and the next delivery sends them past the cap and pause holds once (wait reason
    `released`, reputation/caps.py). Warm-up caps still hold: they protect the address's
    standing with the receivers, which an operator's say-so does not change. Returns how
    many moved; a `released` event each."""
    return _bulk(
        ids,
        statuses=(RecipientStatus.HELD, RecipientStatus.QUEUED, RecipientStatus.DEFERRED),
        fields={
            "status": RecipientStatus.QUEUED,
            "next_attempt_at": now,
            "wait_reason": WaitReason.RELEASED,
        },
        event=EventType.RELEASED,
        detail=f"released by {actor}"[:200],
        now=now,
    )


def queue_retry(*, ids: Sequence[int], now: datetime, actor: str) -> int:
    """An operator's "retry now": deferred rows' next attempt is now (their backoff and
    expiry unchanged). A `released` event each, detail `retry now by …`."""
    return _bulk(
        ids,
        statuses=(RecipientStatus.DEFERRED,),
        fields={"next_attempt_at": now},
        event=EventType.RELEASED,
        detail=f"retry now by {actor}"[:200],
        now=now,
    )


def queue_cancel(*, ids: Sequence[int], now: datetime, actor: str) -> int:
    """An operator's cancel: waiting rows become `cancelled`, never sent, with a
    `cancelled` event each (webhooks forward it)."""
    return _bulk(
        ids,
        statuses=WAITING,
        fields={"status": RecipientStatus.CANCELLED, "wait_reason": ""},
        event=EventType.CANCELLED,
        detail=f"cancelled by {actor}"[:200],
        now=now,
    )


def unsubscribe_record(
    *,
    organization_id: int,
    address: str,
    stream_id: int,
    row: QueuedRecipient | None,
    detail: str,
) -> bool:
    """A recipient's unsubscribe from one stream (RFC 8058 one-click): a suppression of
    the address for that stream and an `unsubscribed` event on the row the link came in
    (None when the message has been pruned since: the suppression alone).

    Idempotent: True the first time; a replay (or a concurrent duplicate, which loses
    the unique constraint) changes nothing and appends no event."""
    with data_atomic():
        try:
            with data_atomic():  # a savepoint: the duplicate's error ends here
                Suppression.objects.create(
                    organization_id=organization_id,
                    address=address.lower(),
                    stream_id=stream_id,
                    reason=SuppressionReason.UNSUBSCRIBED,
                    detail=detail[:_REPLY_MAX],
                    message_id=row.message_id if row is not None else None,
                )
        except IntegrityError:
            return False
        if row is not None:
            _events_append(
                [
                    DeliveryEvent(
                        organization_id=organization_id,
                        message_id=row.message_id,
                        recipient_id=row.pk,
                        type=EventType.UNSUBSCRIBED,
                        detail=detail,
                    )
                ]
            )
    return True


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
    with data_atomic():
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
