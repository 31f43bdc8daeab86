"""Hourly and daily volume windows, shared by the warm-up caps (pools/warmup.py) and the
per-key and per-server caps (reputation/caps.py).

Both count what was sent in rows of one clock hour (UTC) each and read a day as the sum of
its hours; both reserve before sending, under the row lock of whatever owns the cap, so
that concurrent workers (and API processes) share one count. What they share is here:
the windows' bounds, an allowance read from the counts, the count itself, when a full
window opens again, and the pruning of the rows no decision reads any more. What each caps
(an address, a key, a server) stays with its owner.

How far back the rows are read, and so how long they are kept (`window_horizon`):
- the caps (reputation/caps.py) and the warm-up's admission (pools/warmup.py) read this
  hour and today (`window_counts`);
- the warm-up's daily judgement (`warmup_advance`) reads yesterday, whenever it runs: an
  address is judged on the day before the run, never on an older one.
So nothing reads before the start of yesterday. KEEP_DAYS keeps two whole days more as a
margin: for a host whose clock trails (its "yesterday" is the prune's day before), and for
an operator looking at the last days' counts. A row is written only for the current hour,
so a row past the horizon is never written again either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import models, transaction
from django.db.models import F, Sum

log = logging.getLogger("mailplane.core.windows")

KEEP_DAYS = 3  # whole days kept before today (see the module's docstring)
# Up to 100,000 rows a run, hourly: the tables gain one row per active owner an hour, so a
# run keeps up with 100,000 owners, and a backlog drains over the runs that follow.
PRUNE_BATCH = 1000
PRUNE_MAX_BATCHES = 100


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


def window_horizon(now: datetime) -> datetime:
    """The start of the oldest hour any window decision can still read, less the margin:
    rows of hours before it may go."""
    return day_of(now) - timedelta(days=KEEP_DAYS)


def window_prune(
    model: type[models.Model],
    *,
    now: datetime,
    batch: int = PRUNE_BATCH,
    max_batches: int = PRUNE_MAX_BATCHES,
) -> int:
    """Delete `model`'s rows of hours before the horizon, oldest first, `batch` rows per
    transaction and at most `max_batches` transactions (the next periodic run goes on), so
    that no transaction holds many row locks for long (as queue/retention.py). The ids are
    read through the model's index on `hour`; returns how many rows went."""
    rows = model._default_manager.filter(hour__lt=window_horizon(now))
    deleted = 0
    for _ in range(max_batches):
        ids = list(rows.order_by("hour").values_list("pk", flat=True)[:batch])
        if not ids:
            break
        with transaction.atomic():
            model._default_manager.filter(pk__in=ids).delete()
        deleted += len(ids)
        if len(ids) < batch:
            break
    if deleted:
        log.info("pruned %d %s rows before %s", deleted, model.__name__, window_horizon(now))
    return deleted
