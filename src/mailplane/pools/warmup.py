"""Warm-up: a new address sends a little more each day, within daily and hourly caps.

Receivers judge a new address by its first weeks: a sudden volume from it looks like a
compromised host. SES ramps a new dedicated address to about 50,000 messages a day over 45
days; DEFAULT_RAMP does the same (geometric, 50 → 50,000, hourly cap an eighth of the day's
so that a day's mail spreads over at least eight hours). A pool may carry its own
schedule (`IpPool.warmup_schedule`).

Caps are reserved before sending (`warmup_admit`, under the addresses' row locks, so every
worker shares one count); a message over its address's caps tries the pool's other
addresses, else waits for the next hour (or day) without spending a delivery attempt.
Once a day `warmup_advance` judges the day before: enough sent (80 % of the cap) with few
bounces (under 5 %) moves the address one stage on; a high bounce rate (10 % and more)
steps it back; anything else holds it. Past the last stage the address is warm: no caps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Sum

from mailplane.cells.routing import data_atomic
from mailplane.core.windows import Allowance, day_of, hour_of, window_add, window_counts
from mailplane.pools.models import AddressUsage, IpPool, PoolAddress
from mailplane.pools.selectors import PoolChoice, Source

ADVANCE_SHARE = 0.8  # of the day's cap sent: the stage moves on
HOLD_BOUNCE_RATE = 0.05
STEP_BACK_BOUNCE_RATE = 0.10
MIN_JUDGED = 20  # fewer sends than this say nothing about a bounce rate


@dataclass(frozen=True, slots=True)
class Stage:
    daily: int
    hourly: int


def _ramp(days: int = 45, first: int = 50, last: int = 50_000, hours: int = 8) -> list[Stage]:
    stages = []
    for day in range(days):
        daily = round(first * (last / first) ** (day / (days - 1)))
        stages.append(Stage(daily, math.ceil(daily / hours)))
    return stages


DEFAULT_RAMP = _ramp()


def schedule_of(pool: IpPool) -> list[Stage]:
    if not pool.warmup_schedule:
        return DEFAULT_RAMP
    return [Stage(int(s["daily"]), int(s["hourly"])) for s in pool.warmup_schedule]


def schedule_validate(raw: object) -> list[dict[str, int]]:
    """A schedule as an operator gives it: 1-365 stages of positive daily and hourly caps."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= 365:
        raise ValueError("a schedule is a list of 1 to 365 stages")
    stages = []
    for n, item in enumerate(raw, 1):
        if not isinstance(item, dict) or set(item) != {"daily", "hourly"}:
            raise ValueError(f"stage {n}: give exactly daily and hourly")
        daily, hourly = item["daily"], item["hourly"]
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (daily, hourly)
        ):
            raise ValueError(f"stage {n}: caps are positive whole numbers")
        if hourly > daily:
            raise ValueError(f"stage {n}: the hourly cap is over the daily one")
        stages.append({"daily": daily, "hourly": hourly})
    return stages


def stage_of(address: PoolAddress) -> Stage | None:
    """The caps that apply to `address` today; None once it is warm."""
    if address.warmup_day == 0:
        return None
    schedule = schedule_of(address.pool)
    return schedule[min(address.warmup_day, len(schedule)) - 1]


@dataclass
class _Allowance(Allowance):
    row: PoolAddress | None = None


@dataclass
class Admission:
    """What `warmup_admit` decided: each admitted item's address, and for each held item
    when its pool has room again."""

    sources: dict[int, Source] = field(default_factory=dict)
    held: dict[int, tuple[str, datetime]] = field(default_factory=dict)  # item → (pool, retry)


def warmup_admit(items: Sequence[tuple[int, PoolChoice, Source]], *, now: datetime) -> Admission:
    """Admit (item key, pool, preferred address) items within the caps of the pools'
    warming addresses, in order; reserve what is admitted. One transaction, whatever the
    number of items: the pools' warming addresses are locked (in id order), their hour's and
    day's counts read once, the grants written once per address."""
    admission = Admission()
    if not items:
        return admission
    hour, day = hour_of(now), day_of(now)
    addresses = {s.address for _, choice, _ in items for s in choice.sources}
    with data_atomic():
        warming = list(
            PoolAddress.objects.select_for_update()
            .filter(address__in=addresses, warmup_day__gt=0, enabled=True)
            .select_related("pool")
            .order_by("id")
        )
        if not warming:
            admission.sources = {key: preferred for key, _, preferred in items}
            return admission
        this_hour, today = window_counts(
            AddressUsage.objects.all(),
            owner="address_id",
            count="sent",
            owners=[a.pk for a in warming],
            now=now,
        )
        caps: dict[str, _Allowance] = {}
        for row in warming:
            stage = stage_of(row)
            assert stage is not None  # warmup_day > 0
            used_hour, used_day = this_hour.get(row.pk, 0), today.get(row.pk, 0)
            caps[row.address] = _Allowance(
                max(0, stage.hourly - used_hour), max(0, stage.daily - used_day), row=row
            )
        for key, choice, preferred in items:
            chosen = _pick(choice, preferred, caps)
            if chosen is None:
                admission.held[key] = (choice.pool, _retry_at(choice, caps, hour, day))
                continue
            admission.sources[key] = chosen
            allowance = caps.get(chosen.address)
            if allowance is not None:
                allowance.granted += 1
        for allowance in caps.values():
            if allowance.granted and allowance.row is not None:
                _count(allowance.row, hour, sent=allowance.granted)
    return admission


def _pick(choice: PoolChoice, preferred: Source, caps: dict[str, _Allowance]) -> Source | None:
    """The preferred address if it has room (or is warm), else the first of the pool's
    that has."""
    for source in (preferred, *choice.sources):
        allowance = caps.get(source.address)
        if allowance is None or allowance.fits():
            return source
    return None


def _retry_at(
    choice: PoolChoice, caps: dict[str, _Allowance], hour: datetime, day: datetime
) -> datetime:
    """The next hour, unless every address of the pool has spent its day: then tomorrow."""
    day_left = any(caps[s.address].day_fits() for s in choice.sources)
    return hour + timedelta(hours=1) if day_left else day + timedelta(days=1)


def _count(address: PoolAddress, hour: datetime, *, sent: int = 0, bounced: int = 0) -> None:
    window_add(AddressUsage, hour=hour, lookup={"address": address}, sent=sent, bounced=bounced)


def warmup_bounces_record(bounced: dict[str, int], *, now: datetime) -> None:
    """Count bounces against the warming addresses they were sent from (this hour)."""
    if not bounced:
        return
    rows = PoolAddress.objects.filter(address__in=list(bounced), warmup_day__gt=0)
    for row in rows:
        _count(row, hour_of(now), bounced=bounced[row.address])


def warmup_advance(*, now: datetime) -> list[PoolAddress]:
    """Judge each warming address's yesterday once a day; returns the addresses changed."""
    today = day_of(now)
    changed = []
    for row in PoolAddress.objects.filter(warmup_day__gt=0).select_related("pool"):
        if row.warmup_checked_on == today.date():
            continue
        if row.warmup_checked_on is None:  # its first day has only begun
            row.warmup_checked_on = today.date()
            row.save(update_fields=["warmup_checked_on"])
            continue
        totals = AddressUsage.objects.filter(
            address=row, hour__gte=today - timedelta(days=1), hour__lt=today
        ).aggregate(sent=Sum("sent"), bounced=Sum("bounced"))
        sent, bounced = totals["sent"] or 0, totals["bounced"] or 0
        rate = bounced / sent if sent >= MIN_JUDGED else 0.0
        stage = stage_of(row)
        assert stage is not None
        before = row.warmup_day
        if rate >= STEP_BACK_BOUNCE_RATE:
            row.warmup_day = max(1, row.warmup_day - 1)
        elif rate < HOLD_BOUNCE_RATE and sent >= ADVANCE_SHARE * stage.daily:
            row.warmup_day += 1
            if row.warmup_day > len(schedule_of(row.pool)):
                row.warmup_day = 0  # warm: no caps from now on
        row.warmup_checked_on = today.date()
        row.save(update_fields=["warmup_day", "warmup_checked_on"])
        if row.warmup_day != before:
            changed.append(row)
    return changed
