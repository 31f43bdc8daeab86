"""The event stream (queue/events.py) counted into analytics tables, under our own cursor.

One transaction reads the events after the cursor, adds their counts (upserts that add
to what is there) and moves the cursor past them: a crash before the commit leaves
neither, so the events are read and counted again; after it both, so they are never
counted twice. The stream is gap-free and ordered, so none is missed.

The cursor pattern is webhooks/consumer.py's, kept apart on purpose: each consumer owns
its position, and one falling behind or failing holds back no other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection

from mailplane.analytics.metrics import event_metrics, latency_bucket
from mailplane.analytics.models import (
    AnalyticsCursor,
    BounceDomainCount,
    LatencyHistogram,
    StatCounter,
)
from mailplane.queue.events import cursor_position as events_cursor_position
from mailplane.queue.events import events_consume_step
from mailplane.queue.models import DeliveryEvent, EventType, OutboundMessage, QueuedRecipient
from mailplane.servers.models import ServerMessage

CURSOR = "analytics"
TAG_MAX = 100  # MessageTag.tag, StatCounter.tag

# (server, stream, tag, hour, metric), (server, day, bucket), (server, day, domain)
CounterKey = tuple[int, int, str, datetime, str]
LatencyKey = tuple[int, date, int]
DomainKey = tuple[int, date, str]


def cursor_position() -> int:
    return events_cursor_position(AnalyticsCursor, CURSOR)


def events_count(*, limit: int = 1000) -> int:
    """Count up to `limit` events past the cursor; returns how many were read (0: caught
    up, and then nothing is locked or written)."""
    return events_consume_step(AnalyticsCursor, CURSOR, _count_batch, limit=limit)


def _count_batch(events: list[DeliveryEvent]) -> None:
    counters, latencies, domains = _tally(events)
    _add(StatCounter, ("server_id", "stream_id", "tag", "hour", "metric"), counters)
    _add(LatencyHistogram, ("server_id", "day", "bucket"), latencies)
    _add(BounceDomainCount, ("server_id", "day", "domain"), domains)


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _tally(
    events: list[DeliveryEvent],
) -> tuple[Counter[CounterKey], Counter[LatencyKey], Counter[DomainKey]]:
    """The batch's increments, summed in memory: one upsert per distinct key, however
    many events share it."""
    links = {
        row["message_id"]: row
        for row in ServerMessage.objects.filter(
            message_id__in={e.message_id for e in events}
        ).values("message_id", "server_id", "stream_id", "tags")
    }
    delivered = {e.message_id for e in events if e.type == EventType.DELIVERED}
    queued_at = dict(
        OutboundMessage.objects.filter(pk__in=delivered & set(links)).values_list(
            "pk", "created_at"
        )
    )
    # A scheduled recipient waited for its send time by choice: that wait is no latency,
    # so it is left out of the histogram (its events are counted all the same).
    scheduled = (
        set(
            DeliveryEvent.objects.filter(
                recipient_id__in={
                    e.recipient_id
                    for e in events
                    if e.type == EventType.DELIVERED and e.recipient_id
                },
                type=EventType.SCHEDULED,
            ).values_list("recipient_id", flat=True)
        )
        if queued_at
        else set()
    )
    bounced = {e.recipient_id for e in events if e.type == EventType.BOUNCED and e.recipient_id}
    rcpt_domain = dict(
        QueuedRecipient.objects.filter(pk__in=bounced).values_list("pk", "rcpt_domain")
    )
    counters: Counter[CounterKey] = Counter()
    latencies: Counter[LatencyKey] = Counter()
    domains: Counter[DomainKey] = Counter()
    for event in events:
        link = links.get(event.message_id)
        if link is None:
            continue  # not sent through a server (SMTP mailboxes, DSNs): no server to count for
        metrics = event_metrics(event.type, event.bounce_class, event.detail)
        if not metrics:
            continue
        server, stream = link["server_id"], link["stream_id"]
        hour = _hour(event.created_at)
        day = hour.date()
        tags = ["", *dict.fromkeys(str(t)[:TAG_MAX] for t in link["tags"] or [] if t)]
        for tag in tags:
            for metric in metrics:
                counters[(server, stream, tag, hour, metric)] += 1
        if (
            event.type == EventType.DELIVERED
            and event.message_id in queued_at
            and event.recipient_id not in scheduled
        ):
            took = (event.created_at - queued_at[event.message_id]).total_seconds()
            latencies[(server, day, latency_bucket(max(took, 0.0)))] += 1
        if event.type == EventType.BOUNCED and event.recipient_id in rcpt_domain:
            domains[(server, day, rcpt_domain[event.recipient_id].lower())] += 1
    return counters, latencies, domains


def _add(model: Any, columns: tuple[str, ...], increments: Counter[Any]) -> None:
    """INSERT … ON CONFLICT DO UPDATE SET count = count + excluded.count (PostgreSQL and
    SQLite ≥ 3.24 alike): the increment lands whether or not the row exists yet, and two
    consumers racing on one key cannot lose either's."""
    if not increments:
        return
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = ", ".join(quote(c) for c in columns)
    marks = ", ".join(["%s"] * (len(columns) + 1))
    count = quote("count")
    sql = (
        f"INSERT INTO {table} ({names}, {count}) VALUES ({marks}) "
        f"ON CONFLICT ({names}) DO UPDATE SET {count} = {table}.{count} + excluded.{count}"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, [[*_adapted(key), n] for key, n in increments.items()])


def _adapted(values: Iterable[Any]) -> list[Any]:
    """Dates and times as the backend stores them (raw SQL skips the fields' adaptation:
    SQLite would otherwise get another text form than the ORM writes and reads)."""
    ops = connection.ops
    out: list[Any] = []
    for value in values:
        if isinstance(value, datetime):
            out.append(ops.adapt_datetimefield_value(value))
        elif isinstance(value, date):
            out.append(ops.adapt_datefield_value(value))
        else:
            out.append(value)
    return out
