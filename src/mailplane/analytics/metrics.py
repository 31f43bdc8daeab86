"""What is counted: the queue's event types as metrics, and the latency buckets.

One table names each metric once; the consumer, the selectors and the API's serializers
all read it, so a metric cannot be counted and not shown, or shown and never counted.

Opens and clicks: the tracking work adds `opened` and `clicked` to `EventType`. Whatever
of those the queue defines is counted here as a total (`opened`, `clicked`); a first open
or click of a recipient is told apart by the event itself (TRACKING_UNIQUE below: its
`detail` is "first"), counted as `opened_unique` / `clicked_unique`. Until the event types
exist, neither appears.
"""

from __future__ import annotations

import math

from mailplane.queue.models import BounceClass, EventType

# The queue's event type -> the metric it counts (the API's names: `failed` is
# `rejected` there, as in the webhooks).
EVENT_METRICS: dict[str, str] = {
    EventType.QUEUED.value: "sent",
    EventType.DELIVERED.value: "delivered",
    EventType.DEFERRED.value: "deferred",
    EventType.BOUNCED.value: "bounced",
    EventType.COMPLAINED.value: "complained",
    EventType.UNSUBSCRIBED.value: "unsubscribed",
    EventType.SUPPRESSED.value: "suppressed",
    EventType.FAILED.value: "rejected",
    # `send_at`: held for a send time (again when moved), and cancelled before it.
    EventType.SCHEDULED.value: "scheduled",
    EventType.CANCELLED.value: "cancelled",
}
TRACKING = [name for name in ("opened", "clicked") if name in EventType.values]
EVENT_METRICS.update({name: name for name in TRACKING})
# A tracking event whose `detail` says it is the recipient's first of its kind.
TRACKING_UNIQUE = "first"

BOUNCE_PREFIX = "bounced:"  # + the bounce class: bounced mail by kind of failure

METRICS: list[str] = [
    *dict.fromkeys(EVENT_METRICS.values()),
    *(f"{name}_unique" for name in TRACKING),
]
BOUNCE_CLASSES: list[str] = list(BounceClass.values)


def event_metrics(event_type: str, bounce_class: str, detail: str) -> list[str]:
    """The metrics one event adds 1 to (none for a type not counted)."""
    metric = EVENT_METRICS.get(event_type)
    if metric is None:
        return []
    found = [metric]
    if event_type == EventType.BOUNCED and bounce_class:
        found.append(BOUNCE_PREFIX + bounce_class)
    if event_type in TRACKING and detail == TRACKING_UNIQUE:
        found.append(f"{metric}_unique")
    return found


# Latency histogram: fixed logarithmic buckets, each √2 times wider than the one before,
# from 50 ms to about 6 days; bucket i holds latencies up to LATENCY_BOUNDS[i] seconds,
# the last one everything longer. A percentile read from it is an upper bound within a
# factor of √2 of the true value, whatever the range, and costs a row per bucket and day.
LATENCY_BASE = 0.05
LATENCY_BUCKETS = 48
LATENCY_BOUNDS: list[float] = [LATENCY_BASE * 2 ** (i / 2) for i in range(LATENCY_BUCKETS)]


def latency_bucket(seconds: float) -> int:
    if seconds <= LATENCY_BASE:
        return 0
    index = math.ceil(2 * math.log2(seconds / LATENCY_BASE) - 1e-9)
    return min(index, LATENCY_BUCKETS - 1)


def percentile(counts: dict[int, int], fraction: float) -> float | None:
    """The upper bound of the bucket holding the `fraction` quantile (nearest rank);
    None without data. The last bucket has no bound: its lower one is returned."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return round(LATENCY_BOUNDS[index], 3)
    raise AssertionError("unreachable")
