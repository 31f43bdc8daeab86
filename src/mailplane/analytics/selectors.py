"""Reads of the analytics tables for the stats endpoints: one indexed range of one
server's rows per request (models.py), never the event stream.

Time is UTC throughout: counters are per UTC hour, histograms and bounce domains per UTC
day. A window is half-open, [start, end), on bucket boundaries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour

from mailplane.analytics.metrics import (
    BOUNCE_CLASSES,
    BOUNCE_PREFIX,
    LATENCY_BOUNDS,
    METRICS,
    percentile,
)
from mailplane.analytics.models import BounceDomainCount, LatencyHistogram, StatCounter
from mailplane.core.errors import ValidationFailed
from mailplane.servers.models import EmailServer, MessageStream

DAY = "day"
HOUR = "hour"
STEP = {DAY: timedelta(days=1), HOUR: timedelta(hours=1)}
# The longest window per grouping (a year of days, a month of hours): a bounded answer,
# and a bounded index range read.
SPAN_MAX = {DAY: timedelta(days=366), HOUR: timedelta(days=31)}
DEFAULT_SPAN = {DAY: timedelta(days=30), HOUR: timedelta(hours=24)}
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime  # excluded
    group_by: str

    def buckets(self) -> list[datetime]:
        step, at, found = STEP[self.group_by], self.start, []
        while at < self.end:
            found.append(at)
            at += step
        return found


def _floor(at: datetime, group_by: str) -> datetime:
    at = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if group_by == DAY else at


def _ceil(at: datetime, group_by: str) -> datetime:
    floored = _floor(at, group_by)
    return floored if floored == at else floored + STEP[group_by]


def stats_window(
    *, start: datetime | None, end: datetime | None, group_by: str, now: datetime
) -> Window:
    """The buckets [`from`, `to`) touches: `from` rounded down to its bucket, `to` up (as
    the messages list reads them, `to` is excluded: a date means its midnight); by default
    the last 30 days (by day) or 24 hours (by hour) up to now. ValidationFailed names the
    parameter at fault."""
    try:
        stop = _ceil(end if end is not None else now, group_by)
    except OverflowError:
        raise ValidationFailed.on("to", "out of range") from None
    try:
        first = _floor(start, group_by) if start else stop - DEFAULT_SPAN[group_by]
    except OverflowError:
        raise ValidationFailed.on("from", "out of range") from None
    if first >= stop:
        raise ValidationFailed.on("to", "must be after from")
    if stop - first > SPAN_MAX[group_by]:
        days = SPAN_MAX[group_by].days
        raise ValidationFailed.on(
            "to", f"at most {days} days after from when grouped by {group_by}"
        )
    return Window(first, stop, group_by)


def _stream_of(server: EmailServer, stream_id: str) -> MessageStream:
    found = MessageStream.objects.filter(server=server, stream_id=stream_id).first()
    if found is None:
        raise ValidationFailed.on("stream", f"this server has no stream {stream_id!r}")
    return found


def counts_empty() -> dict[str, Any]:
    return {
        **{m: 0 for m in METRICS},
        "bounced_by_class": {c: 0 for c in BOUNCE_CLASSES},
    }


def _count_add(counts: dict[str, Any], metric: str, value: int) -> None:
    if metric.startswith(BOUNCE_PREFIX):
        kind = metric[len(BOUNCE_PREFIX) :]
        if kind in counts["bounced_by_class"]:
            counts["bounced_by_class"][kind] += value
    elif metric in counts:
        counts[metric] += value


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def stats_rates(totals: dict[str, Any]) -> dict[str, float | None]:
    """Delivered and bounced per recipient sent, complaints per delivered (None for no
    mail). Of the window's events: mail sent just before it may be delivered within it."""
    return {
        "delivery_rate": _ratio(totals["delivered"], totals["sent"]),
        "bounce_rate": _ratio(totals["bounced"], totals["sent"]),
        "complaint_rate": _ratio(totals["complained"], totals["delivered"]),
    }


def counter_sums(
    *, server: EmailServer, window: Window, stream: str | None = None, tag: str | None = None
) -> QuerySet[Any, Any]:
    """(bucket, metric, total) rows: one index range of `one_stat_counter` (server, tag,
    hours), summed per bucket by the database."""
    rows = StatCounter.objects.filter(
        server=server, tag=tag or "", hour__gte=window.start, hour__lt=window.end
    )
    if stream:
        rows = rows.filter(stream=_stream_of(server, stream))
    trunc = TruncDay if window.group_by == DAY else TruncHour
    return (
        rows.annotate(bucket=trunc("hour", tzinfo=UTC))
        .values("bucket", "metric")
        .annotate(total=Sum("count"))
        .order_by()
    )


def stats_series(
    *, server: EmailServer, window: Window, stream: str | None = None, tag: str | None = None
) -> dict[str, Any]:
    """Counts per bucket of the window (every bucket, zeros included), their totals and
    rates, for the whole server or one stream, all mail or one tag's."""
    by_bucket: dict[datetime, dict[str, Any]] = defaultdict(counts_empty)
    totals = counts_empty()
    for row in counter_sums(server=server, window=window, stream=stream, tag=tag):
        at = row["bucket"].astimezone(UTC)
        _count_add(by_bucket[at], row["metric"], int(row["total"]))
        _count_add(totals, row["metric"], int(row["total"]))
    series = [{"start": at, **by_bucket.get(at, counts_empty())} for at in window.buckets()]
    return {
        "from": window.start,
        "to": window.end,
        "group_by": window.group_by,
        "stream": stream or None,
        "tag": tag or None,
        "series": series,
        "totals": totals,
        "rates": stats_rates(totals),
    }


def _percentiles(counts: dict[int, int]) -> dict[str, Any]:
    return {
        "count": sum(counts.values()),
        **{name: percentile(counts, q) for name, q in PERCENTILES.items()},
    }


def _days(window: Window) -> tuple[date, date]:
    return window.start.date(), window.end.date()


def stats_latency(*, server: EmailServer, window: Window) -> dict[str, Any]:
    """Queued → delivered percentiles (seconds, upper bounds: metrics.py) per UTC day and
    over the window, from the daily histograms."""
    first, stop = _days(window)
    per_day: dict[date, dict[int, int]] = defaultdict(dict)
    overall: dict[int, int] = defaultdict(int)
    rows = LatencyHistogram.objects.filter(server=server, day__gte=first, day__lt=stop)
    for day, bucket, count in rows.values_list("day", "bucket", "count"):
        per_day[day][bucket] = per_day[day].get(bucket, 0) + count
        overall[bucket] += count
    return {
        "from": window.start,
        "to": window.end,
        **_percentiles(overall),
        "days": [
            {"day": day, **_percentiles(per_day.get(day, {}))}
            for day in (at.date() for at in window.buckets())
        ],
        "buckets": [
            {"le": round(LATENCY_BOUNDS[i], 3), "count": overall[i]} for i in sorted(overall)
        ],
    }


def stats_bounce_domains(*, server: EmailServer, window: Window, limit: int) -> dict[str, Any]:
    """The recipient domains that bounced most in the window, most first."""
    first, stop = _days(window)
    rows = (
        BounceDomainCount.objects.filter(server=server, day__gte=first, day__lt=stop)
        .values("domain")
        .annotate(bounced=Sum("count"))
        .order_by("-bounced", "domain")[:limit]
    )
    return {
        "from": window.start,
        "to": window.end,
        "domains": [{"domain": r["domain"], "bounced": int(r["bounced"])} for r in rows],
    }
