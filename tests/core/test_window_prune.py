"""Pruning the caps' and the warm-up's hour rows (core/windows.py window_prune).

On an injected clock: the rows before the horizon go, the newer ones stay, and the real
decisions (a refuse-mode cap reservation; the warm-up's daily judgement and admission)
come out the same after the prune as before it. Bounded: at most `max_batches` deletes a
run, the oldest first, the rest the next run. The filter has its index; the beat runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from django.db import connection, models, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mailplane.core.windows import KEEP_DAYS, day_of, hour_of, window_horizon, window_prune
from mailplane.periodic import BEAT_SCHEDULE
from mailplane.pools.models import AddressUsage, PoolAddress
from mailplane.pools.selectors import PoolChoice, Source
from mailplane.pools.services import pool_create, pool_schedule_set
from mailplane.pools.tasks import address_usage_prune
from mailplane.pools.warmup import warmup_admit, warmup_advance
from mailplane.reputation.caps import caps_reserve, scope_of
from mailplane.reputation.models import CapUsage
from mailplane.reputation.tasks import cap_usage_prune
from mailplane.servers.services import server_key_create
from tests.support.servers import server_make

pytestmark = pytest.mark.django_db

NOW = datetime(2027, 1, 10, 14, 30, tzinfo=UTC)
TODAY = day_of(NOW)
YESTERDAY = TODAY - timedelta(days=1)
HORIZON = TODAY - timedelta(days=KEEP_DAYS)
T = TypeVar("T")


def _at(day: datetime, hour: int) -> datetime:
    return day + timedelta(hours=hour)


def _old_hours(n: int) -> list[datetime]:
    """`n` hours before the horizon, the newest just before it."""
    return [HORIZON - timedelta(hours=h) for h in range(n, 0, -1)]


def _undone(decide: Callable[[], T]) -> T:
    """What `decide` returns, with everything it wrote rolled back."""
    with transaction.atomic():
        result = decide()
        transaction.set_rollback(True)
    return result


def test_the_horizon_keeps_yesterday_and_a_margin() -> None:
    # Nothing reads before yesterday's start (warmup_advance); two whole days more are kept.
    assert window_horizon(NOW) == YESTERDAY - timedelta(days=2)
    assert window_horizon(TODAY) == window_horizon(NOW)


def test_a_cap_decides_the_same_after_the_prune(account: Any) -> None:
    live = server_make(account)
    key = server_key_create(
        server=live.server, name="strict", hourly_cap=3, daily_cap=5, cap_mode="refuse"
    ).server_key
    scope = scope_of(key)
    kept = {
        _at(TODAY, 9): 2,
        _at(TODAY, 14): 1,  # this hour: 2 left in it, 2 left today
        _at(YESTERDAY, 20): 50,
        HORIZON: 50,  # the oldest hour kept
    }
    old = {hour: 50 for hour in _old_hours(30)}
    CapUsage.objects.bulk_create(
        CapUsage(scope=scope, hour=h, recipients=n) for h, n in {**kept, **old}.items()
    )

    def decide() -> list[str | None]:
        results = caps_reserve(server=live.server, server_key=key, counts=[1, 1, 1], now=NOW)
        return [None if r is None else f"{type(r).__name__}: {r}" for r in results]

    before = _undone(decide)
    assert before[:2] == [None, None] and before[2] is not None  # the third is over the hour's
    assert window_prune(CapUsage, now=NOW) == len(old)
    assert dict(CapUsage.objects.values_list("hour", "recipients")) == kept
    assert decide() == before


def test_the_warm_up_decides_the_same_after_the_prune() -> None:
    pool = pool_create(name="warming")
    pool_schedule_set(pool=pool, schedule=[{"daily": 10, "hourly": 4}, {"daily": 20, "hourly": 8}])
    row = PoolAddress.objects.create(
        pool=pool,
        address="192.0.2.10",
        helo_name="w10.mail.test",
        warmup_day=1,
        warmup_checked_on=YESTERDAY.date(),
    )
    kept = {
        _at(YESTERDAY, 10): 5,  # yesterday: 9 sent of 10, no bounce: stage 2 today
        _at(YESTERDAY, 11): 4,
        _at(TODAY, 13): 10,
        _at(TODAY, 14): 6,  # stage 2 (20 a day, 8 an hour): 2 more this hour
        HORIZON + timedelta(hours=5): 1,
    }
    old = {hour: 40 for hour in _old_hours(30)}
    AddressUsage.objects.bulk_create(
        AddressUsage(address=row, hour=h, sent=n) for h, n in {**kept, **old}.items()
    )
    source = Source(row.address, row.helo_name)
    choice = PoolChoice(pool="warming", sources=(source,))

    def decide() -> tuple[int, list[int], dict[int, tuple[str, datetime]]]:
        warmup_advance(now=NOW)
        admission = warmup_admit([(n, choice, source) for n in range(3)], now=NOW)
        stage = PoolAddress.objects.get(pk=row.pk).warmup_day
        return stage, sorted(admission.sources), admission.held

    before = _undone(decide)
    assert before == (2, [0, 1], {2: ("warming", hour_of(NOW) + timedelta(hours=1))})
    assert window_prune(AddressUsage, now=NOW) == len(old)
    assert dict(AddressUsage.objects.values_list("hour", "sent")) == kept
    assert decide() == before


def test_a_run_deletes_at_most_its_batches_oldest_first() -> None:
    old = _old_hours(25)
    CapUsage.objects.bulk_create(
        [CapUsage(scope="server:1", hour=h, recipients=1) for h in old]
        + [CapUsage(scope="server:1", hour=_at(TODAY, h), recipients=1) for h in (0, 1)]
    )
    with CaptureQueriesContext(connection) as queries:
        assert window_prune(CapUsage, now=NOW, batch=10, max_batches=2) == 20
    deletes = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 2  # one bounded delete per transaction
    left = sorted(CapUsage.objects.filter(hour__lt=HORIZON).values_list("hour", flat=True))
    assert left == old[20:]  # the oldest went first
    assert window_prune(CapUsage, now=NOW, batch=10, max_batches=2) == 5  # the next run
    assert window_prune(CapUsage, now=NOW, batch=10, max_batches=2) == 0
    assert CapUsage.objects.count() == 2


@pytest.mark.parametrize("model", [CapUsage, AddressUsage])
def test_the_prune_filter_has_an_index(model: type[models.Model]) -> None:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    leading = [c["columns"][0] for c in found.values() if c["index"] and c["columns"]]
    assert "hour" in leading  # the unique (owner, hour) index cannot serve `hour < …`


def test_the_beat_runs_both_prunes_hourly() -> None:
    tasks = {entry["task"]: entry["schedule"] for entry in BEAT_SCHEDULE.values()}
    assert tasks[cap_usage_prune.name] == 3600.0
    assert tasks[address_usage_prune.name] == 3600.0


def test_the_tasks_prune_on_the_real_clock() -> None:
    pool = pool_create(name="p")
    row = PoolAddress.objects.create(pool=pool, address="192.0.2.11", helo_name="w.mail.test")
    now = hour_of(timezone.now())
    long_ago = window_horizon(now) - timedelta(days=1)
    CapUsage.objects.bulk_create(CapUsage(scope="key:1", hour=h) for h in (long_ago, now))
    AddressUsage.objects.bulk_create(AddressUsage(address=row, hour=h) for h in (long_ago, now))
    assert cap_usage_prune.apply().get() == 1
    assert address_usage_prune.apply().get() == 1
    assert list(CapUsage.objects.values_list("hour", flat=True)) == [now]
    assert list(AddressUsage.objects.values_list("hour", flat=True)) == [now]
