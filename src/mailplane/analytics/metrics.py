"""What is counted: the queue's event types as metrics, and the latency buckets.

One table names each metric once; the consumer, the selectors and the API's serializers
all read it, so a metric cannot be counted and not shown, or shown and never counted.

Opens and clicks: the tracking work (branch `tracking`) adds `opened` and `clicked` to
`EventType`, written by transitions.engagement_record with a `detail` of `first`,
`repeat` or `machine:<reason>` (then, for a click, a space and the URL). Whatever of those
types the queue defines is counted here: human ones as `opened` / `clicked` (total) and
the first per recipient also as `opened_unique` / `clicked_unique`; machine fetches (Apple
MPP prefetches, link scanners) only as `opened_machine` / `clicked_machine`, never as a
person's. Until the event types exist, none of these metrics appears.
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
# How a tracking event's `detail` begins (queue/transitions.engagement_record).
TRACKING_FIRST = "first"
TRACKING_MACHINE = "machine:"

BOUNCE_PREFIX = "bounced:"  # + the bounce class: bounced mail by kind of failure

METRICS: list[str] = [
    *dict.fromkeys(EVENT_METRICS.values()),
    *(f"{name}_{kind}" for name in TRACKING for kind in ("unique", "machine")),
]
BOUNCE_CLASSES: list[str] = list(BounceClass.values)


def event_metrics(event_type: str, bounce_class: str, detail: str) -> list[str]:
    """The metrics one event adds 1 to (none for a type not counted)."""
    metric = EVENT_METRICS.get(event_type)
    if metric is None:
        return []
    if event_type in TRACKING:
        return engagement_metrics(metric, detail)
    found = [metric]
    if event_type == EventType.BOUNCED and bounce_class:
        found.append(BOUNCE_PREFIX + bounce_class)
    return found


def engagement_metrics(metric: str, detail: str) -> list[str]:
    """An open's or click's metrics, from how its `detail` begins."""
    kind = detail.partition(" ")[0]
    if kind.startswith(TRACKING_MACHINE):
        return [f"{metric}_machine"]  # a prefetch or a scanner: no person's open
    if kind == TRACKING_FIRST:
        return [metric, f"{metric}_unique"]
    return [metric]


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
