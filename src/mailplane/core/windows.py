"""Hourly and daily volume windows, shared by the warm-up caps (pools/warmup.py) and the
per-key and per-server caps (reputation/caps.py).

Both count what was sent in rows of one clock hour (UTC) each and read a day as the sum of
its hours; both reserve before sending, under the row lock of whatever owns the cap, so
that concurrent workers (and API processes) share one count. What they share is here:
the windows' bounds, an allowance read from the counts, the count itself, and when a full
window opens again. What each caps (an address, a key, a server) stays with its owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import F, Sum


def hour_of(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def day_of(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class Allowance:
    """What is left of an hourly and a daily cap (None: that window is not capped)."""

    hour: int | None
    day: int | None
    granted: int = 0

    @classmethod
    def of(cls, *, hourly: int | None, daily: int | None, this_hour: int, today: int) -> Allowance:
        return cls(
            None if hourly is None else max(0, hourly - this_hour),
            None if daily is None else max(0, daily - today),
        )

    @property
    def left(self) -> int | None:
        """What may still be granted now; None without any cap."""
        lefts = [w - self.granted for w in (self.hour, self.day) if w is not None]
        return min(lefts) if lefts else None

    def fits(self, n: int = 1) -> bool:
        left = self.left
        return left is None or left >= n

    def day_fits(self, n: int = 1) -> bool:
        return self.day is None or self.day - self.granted >= n

    def reopens_at(self, now: datetime, n: int = 1) -> datetime:
        """When `n` more fit: the next hour if today has room for them, else tomorrow."""
        if self.day_fits(n):
            return hour_of(now) + timedelta(hours=1)
        return day_of(now) + timedelta(days=1)


def window_counts(
    rows: models.QuerySet[Any], *, owner: str, count: str, owners: Iterable[Any], now: datetime
) -> tuple[dict[Any, int], dict[Any, int]]:
    """This hour's and today's totals of `count` by `owner` among `owners` (two queries,
    whatever their number)."""
    owners = list(owners)
    hour, day = hour_of(now), day_of(now)
    mine = rows.filter(**{f"{owner}__in": owners})
    this_hour = dict(mine.filter(hour=hour).values_list(owner, count))
    today = dict(
        mine.filter(hour__gte=day, hour__lt=day + timedelta(days=1))
        .values(owner)
        .annotate(total=Sum(count))
        .values_list(owner, "total")
    )
    return this_hour, today


def window_add(
    model: type[models.Model], *, hour: datetime, lookup: dict[str, Any], **amounts: int
) -> None:
    """Add `amounts` to the hour's row of `lookup` (made if missing), in the database
    (F expressions: no lost update between two writers)."""
    row, _ = model._default_manager.get_or_create(hour=hour, **lookup)
    model._default_manager.filter(pk=row.pk).update(
        **{name: F(name) + amount for name, amount in amounts.items()}
    )
