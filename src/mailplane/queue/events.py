"""Reading the event stream (the outbox that queue/transitions.py appends to).

A consumer (webhooks, analytics, tracking, the logs API) keeps its own cursor: the `seq`
of the last event it has handled. Numbers are gap-free and become visible in order
(transitions._sequence_take), so `events_after(cursor=N)` returns exactly the events
it has not seen yet, oldest first; a consumer that crashes resumes from its stored cursor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, models

from mailplane.cells.routing import data_atomic
from mailplane.queue.models import DeliveryEvent, EventSequence

MAX_BATCH = 1000


def events_after(
    *, cursor: int, limit: int = MAX_BATCH, organization_id: int | None = None
) -> list[DeliveryEvent]:
    """Up to `limit` events with seq > cursor, in seq order (optionally one tenant's:
    that stream has gaps, the other tenants' events, but keeps the order)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    events = DeliveryEvent.objects.filter(seq__gt=cursor)
    if organization_id is not None:
        events = events.filter(organization_id=organization_id)
    return list(events.order_by("seq")[: min(limit, MAX_BATCH)])


def events_last_seq() -> int:
    """The seq of the newest committed event (0 before the first): where a consumer that
    wants only new events starts."""
    last = EventSequence.objects.filter(pk=1).values_list("last", flat=True).first()
    return int(last or 0)


def cursor_position(cursor_model: type[models.Model], name: str) -> int:
    """A consumer's stored cursor (0 before its first step)."""
    manager: Any = cursor_model._default_manager
    seq = manager.filter(name=name).values_list("seq", flat=True).first()
    return int(seq or 0)


def _cursor_locked(cursor_model: type[models.Model], name: str) -> Any:
    """The cursor row, locked until the transaction ends (PostgreSQL: one consumer at a
    time; SQLite's IMMEDIATE transactions serialise writers anyway)."""
    manager: Any = cursor_model._default_manager
    found = manager.select_for_update().filter(name=name).first()
    if found is not None:
        return found
    try:
        with data_atomic():
            manager.create(name=name, seq=0)
    except IntegrityError:  # another consumer made it first
        pass
    return manager.select_for_update().get(name=name)


def events_consume_step(
    cursor_model: type[models.Model],
    name: str,
    handle: Callable[[list[DeliveryEvent]], None],
    *,
    limit: int = MAX_BATCH,
) -> int:
    """One step of a consumer whose cursor is a (`name`, `seq`) row of `cursor_model`:
    `handle` the events past the cursor and move the cursor, in ONE transaction, so an
    event is handled exactly once whatever crashes when. Returns how many were read (0:
    caught up, and then nothing is locked or written)."""
    if events_last_seq() <= cursor_position(cursor_model, name):
        return 0
    with data_atomic():
        cursor = _cursor_locked(cursor_model, name)
        events = events_after(cursor=cursor.seq, limit=limit)
        if not events:
            return 0
        handle(events)
        cursor.seq = events[-1].seq
        cursor.save(update_fields=["seq"])
    return len(events)
