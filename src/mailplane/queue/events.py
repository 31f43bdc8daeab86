"""Reading the event stream (the outbox that queue/transitions.py appends to).

A consumer (webhooks, analytics, tracking, the logs API) keeps its own cursor: the `seq`
of the last event it has handled. Numbers are gap-free and become visible in order
(transitions._sequence_take), so `events_after(cursor=N)` returns exactly the events
it has not seen yet, oldest first; a consumer that crashes resumes from its stored cursor.
"""

from __future__ import annotations

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
