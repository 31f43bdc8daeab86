"""Warm-up, on an injected clock: 45 days of a pool's two new addresses, each day's and
each hour's sends counted at the sink to the message, the stage advancing each day it was
used, holding or stepping back on bounces, and warm (no caps) after the last stage."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db.models import Sum

from mailplane.delivery.worker import DeliveryWorker
from mailplane.pools.models import AddressUsage, PoolAddress
from mailplane.pools.services import pool_address_add, pool_assign, pool_create, pool_schedule_set
from mailplane.pools.warmup import DEFAULT_RAMP, schedule_validate, warmup_advance
from mailplane.queue.models import QueuedRecipient
from mailplane.queue.services import EnqueueRequest, message_enqueue_many
from tests.delivery.conftest import raw_message, sender  # noqa: F401  (fixture)
from tests.pools.test_pools import _NET
from tests.support.smtp_sink import mx_port, mx_sinks  # noqa: F401

START = datetime(2027, 1, 4, tzinfo=UTC)  # a Monday, 00:00 UTC
DAYS = 45
SCHEDULE = [{"daily": day + 1, "hourly": math.ceil((day + 1) / 3)} for day in range(1, DAYS + 1)]
HOSTS = (60, 61)


def _enqueue(source: Any, count: int, tag: str) -> None:
    message_enqueue_many(
        [
            EnqueueRequest(
                organization=source.account.org,
                mail_from=source.alice.address,
                recipients=[f"{tag}-{n}@dest.test"],
                raw=raw_message(sender=source.alice.address, to=f"{tag}-{n}@dest.test"),
                mailbox=source.alice,
                relay_server=source.relay,
            )
            for n in range(count)
        ]
    )


def _drain(worker: DeliveryWorker, now: datetime) -> None:
    """Every pass the clock allows at `now` (held mail waits for the next hour)."""
    for _ in range(200):
        if worker.run_once(now=now) == 0:
            return
    raise AssertionError("the queue never settled")


@pytest.fixture
def warming(sender: Any, dns_server: Any, mx_sinks: Any) -> dict[str, Any]:  # noqa: F811
    sink = mx_sinks("accept")
    dns_server.mx("dest.test", "mx1.dest.test", preference=10)
    dns_server.a("mx1.dest.test", sink.address)
    pool = pool_create(name="warming")
    pool_schedule_set(pool=pool, schedule=SCHEDULE)
    for host in HOSTS:
        pool_address_add(
            pool=pool, address=f"{_NET}.{host}", helo_name=f"w{host}.mail.test", warmup=True
        )
    pool_assign(pool=pool, organization=sender.account.org)
    return {"sink": sink, "pool": pool}


def test_45_days_of_warmup_counted_at_the_sink(
    sender: Any,  # noqa: F811
    warming: dict[str, Any],
) -> None:
    sink = warming["sink"]
    worker = DeliveryWorker()
    addresses = [f"{_NET}.{h}" for h in HOSTS]
    warmup_advance(now=START)  # day 1 begins: nothing to judge yet
    seen = 0
    for day in range(1, DAYS + 1):
        midnight = START + timedelta(days=day - 1)
        stage = SCHEDULE[day - 1]
        for row in PoolAddress.objects.filter(address__in=addresses):
            assert row.warmup_day == day, (day, row.address, row.warmup_day)
        # More than both addresses may send today: the caps bind.
        _enqueue(sender, 2 * stage["daily"] + 3, f"d{day}")
        sent_today: Counter[str] = Counter()
        for hour in range(1, 5):
            _drain(worker, midnight + timedelta(hours=hour, minutes=5))
            this_hour = Counter(r.peer[0] for r in sink.received[seen:])
            seen = len(sink.received)
            for address in addresses:
                room = stage["daily"] - sent_today[address]
                assert this_hour[address] == min(stage["hourly"], room), (day, hour, address)
                sent_today[address] += this_hour[address]
            assert set(this_hour) <= set(addresses)
        assert sent_today == {a: stage["daily"] for a in addresses}, day
        usage = dict(
            AddressUsage.objects.filter(hour__gte=midnight, hour__lt=midnight + timedelta(days=1))
            .values_list("address__address")
            .annotate(n=Sum("sent"))
        )
        assert usage == {a: stage["daily"] for a in addresses}
        changed = warmup_advance(now=midnight + timedelta(days=1, minutes=1))
        assert len(changed) == 2
    # Past the last stage: warm, no caps; the backlog drains in one go.
    assert set(PoolAddress.objects.values_list("warmup_day", flat=True)) == {0}
    backlog = QueuedRecipient.objects.exclude(status="delivered").count()
    assert backlog == 3 * DAYS
    _drain(worker, START + timedelta(days=DAYS, hours=1))
    assert QueuedRecipient.objects.exclude(status="delivered").count() == 0


def test_held_mail_waits_unattempted_with_the_reason(sender: Any, warming: dict[str, Any]) -> None:  # noqa: F811
    warmup_advance(now=START)
    _enqueue(sender, 10, "h")  # day 1: 2 per address per day, 1 per hour
    worker = DeliveryWorker()
    _drain(worker, START + timedelta(minutes=30))
    rows = list(QueuedRecipient.objects.order_by("id"))
    delivered = [r for r in rows if r.status == "delivered"]
    held = [r for r in rows if r.status == "deferred"]
    assert (len(delivered), len(held)) == (2, 8)  # one per address this hour
    for row in held:
        assert row.attempts == 0  # a hold spends no attempt
        assert row.next_attempt_at == START + timedelta(hours=1)
        assert row.last_reply == (
            "451 4.7.0 warm-up: IP pool warming is at its caps until 2027-01-04 01:00 UTC"
        )
    # An hour later each address has one more of its two; then the day is spent.
    _drain(worker, START + timedelta(hours=1, minutes=1))
    _drain(worker, START + timedelta(hours=2, minutes=1))
    assert QueuedRecipient.objects.filter(status="delivered").count() == 4
    waiting = QueuedRecipient.objects.filter(status="deferred")
    assert {r.next_attempt_at for r in waiting} == {START + timedelta(days=1)}
    assert "until 2027-01-05 00:00 UTC" in waiting[0].last_reply


def test_bounces_hold_or_step_back_the_stage(sender: Any, warming: dict[str, Any]) -> None:  # noqa: F811
    rows = list(PoolAddress.objects.order_by("id"))
    hour = START - timedelta(days=1) + timedelta(hours=3)
    for row, day, sent, bounced in ((rows[0], 5, 40, 3), (rows[1], 5, 40, 6)):
        row.warmup_day, row.warmup_checked_on = day, (START - timedelta(days=1)).date()
        row.save()
        AddressUsage.objects.create(address=row, hour=hour, sent=sent, bounced=bounced)
    warmup_advance(now=START + timedelta(minutes=1))
    days = dict(PoolAddress.objects.values_list("address", "warmup_day"))
    assert days == {rows[0].address: 5, rows[1].address: 4}  # 7.5 % holds, 15 % steps back
    # Judged once a day: a second run the same day changes nothing.
    assert warmup_advance(now=START + timedelta(hours=5)) == []


def test_an_unused_day_holds_the_stage(sender: Any, warming: dict[str, Any]) -> None:  # noqa: F811
    warmup_advance(now=START)
    warmup_advance(now=START + timedelta(days=1, minutes=1))  # day 1 sent nothing
    assert set(PoolAddress.objects.values_list("warmup_day", flat=True)) == {1}


def test_the_default_ramp_is_the_anchors() -> None:
    assert len(DEFAULT_RAMP) == 45
    assert (DEFAULT_RAMP[0].daily, DEFAULT_RAMP[-1].daily) == (50, 50_000)
    assert all(a.daily < b.daily for a, b in itertools.pairwise(DEFAULT_RAMP))
    assert all(s.hourly * 8 >= s.daily for s in DEFAULT_RAMP)


@pytest.mark.parametrize(
    "schedule",
    [
        [],
        {},
        [{"daily": 0, "hourly": 0}],
        [{"daily": 10, "hourly": 20}],
        [{"daily": "10", "hourly": 1}],
        [{"daily": True, "hourly": 1}],
        [{"daily": 10}],
        [{"daily": 10, "hourly": 1, "extra": 1}],
        [{"daily": 1, "hourly": 1}] * 366,
        ["x"],
    ],
)
def test_a_malformed_schedule_is_refused(schedule: Any) -> None:
    with pytest.raises(ValueError):
        schedule_validate(schedule)
