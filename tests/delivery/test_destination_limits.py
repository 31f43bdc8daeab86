"""Per-destination connection caps across workers (Redis) and within one (semaphores)."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from mailplane.delivery.limits import LocalSlots, SharedSlots
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import QueuedRecipient
from tests.support.smtp_sink import free_port


class Concurrency:
    """Counts messages being received at the same moment at the sink: each DATA is held
    for a while, so every open delivery connection shows up as one in-flight DATA."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def install(self, sink: Any, hold: float) -> None:
        original = sink.handler.handle_DATA

        async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
            self.now += 1
            self.peak = max(self.peak, self.now)
            try:
                await asyncio.sleep(hold)
                return str(await original(server, session, envelope))
            finally:
                self.now -= 1

        sink.handler.handle_DATA = handle_DATA


def _two_workers_deliver(sink: Any, count: int) -> None:
    async def run() -> None:
        stops = [asyncio.Event(), asyncio.Event()]
        tasks = [
            asyncio.create_task(
                DeliveryWorker(batch_size=count // 2, concurrency=2).run_forever(stop)
            )
            for stop in stops
        ]
        deadline = time.monotonic() + 30
        while len(sink.received) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)

    asyncio.run(run())


@dataclass
class SlowDomain:
    sink: Any
    concurrency: Concurrency
    relay_id: int


@pytest.fixture
def one_slow_domain(
    transactional_db: Any, sender: Any, dns_server: Any, mx_sinks: Any, settings: Any
) -> SlowDomain:
    """12 messages queued for busy.test, whose one MX holds each DATA for 0.1 s; cap 1."""
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_MAX_CONNECTIONS_PER_DOMAIN": 1}
    sink = mx_sinks("accept")
    dns_server.mx("busy.test", "mx.busy.test")
    dns_server.a("mx.busy.test", sink.address)
    for n in range(12):
        sender.send(f"user{n}@busy.test", subject=f"n{n}")
    concurrency = Concurrency()
    concurrency.install(sink, hold=0.1)
    return SlowDomain(sink, concurrency, sender.relay.pk)


def test_two_workers_share_one_cap_per_destination_through_redis(
    one_slow_domain: SlowDomain, redis_url: str, settings: Any
) -> None:
    settings.MAILPLANE = {**settings.MAILPLANE, "REDIS_URL": redis_url}
    _two_workers_deliver(one_slow_domain.sink, 12)
    assert len(one_slow_domain.sink.received) == 12
    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {"delivered"}
    assert one_slow_domain.concurrency.peak == 1
    # Every slot was given back: nothing left counting against the domain.
    key = SharedSlots.key((one_slow_domain.relay_id, "busy.test"))
    assert redis.Redis.from_url(redis_url).zcard(key) == 0


def test_without_redis_each_worker_has_its_own_cap(
    one_slow_domain: SlowDomain, settings: Any
) -> None:
    """The control for the test above: the same load with per-process caps does exceed
    the cap at the destination, so a peak of 1 there is the shared limit at work."""
    settings.MAILPLANE = {**settings.MAILPLANE, "REDIS_URL": ""}
    _two_workers_deliver(one_slow_domain.sink, 12)
    assert len(one_slow_domain.sink.received) == 12
    assert one_slow_domain.concurrency.peak > 1


def test_redis_going_away_does_not_stop_delivery(
    one_slow_domain: SlowDomain, settings: Any
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.MAILPLANE = {**settings.MAILPLANE, "REDIS_URL": nobody}
    _two_workers_deliver(one_slow_domain.sink, 12)
    assert len(one_slow_domain.sink.received) == 12
    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {"delivered"}


def test_a_crashed_holders_slot_comes_back_after_its_lease(redis_url: str) -> None:
    async def run() -> float:
        crashed = SharedSlots(redis_url, owner="crashed", lease_seconds=0.6)
        alive = SharedSlots(redis_url, owner="alive", lease_seconds=0.6)
        destination = (999_999, f"lease-{os.getpid()}.test")
        await redis.asyncio.from_url(redis_url).delete(SharedSlots.key(destination))
        holding = crashed.slot(destination, 1)
        await holding.__aenter__()  # taken, and never given back: the worker "died"
        assert crashed._renewer is not None
        crashed._renewer.cancel()  # a dead process renews nothing
        began = time.monotonic()
        async with alive.slot(destination, 1):
            waited = time.monotonic() - began
        await alive.close()
        await crashed.close()
        return waited

    assert 0.4 <= asyncio.run(run()) < 5


def test_renewal_keeps_a_long_delivery_s_slot(redis_url: str) -> None:
    async def run() -> bool:
        slow = SharedSlots(redis_url, owner="slow", lease_seconds=0.3)
        other = SharedSlots(redis_url, owner="other", lease_seconds=0.3)
        destination = (999_998, f"renew-{os.getpid()}.test")
        await redis.asyncio.from_url(redis_url).delete(SharedSlots.key(destination))
        async with slow.slot(destination, 1):
            # Three leases long: without renewal the other worker would get in.
            try:
                async with asyncio.timeout(0.9):
                    async with other.slot(destination, 1):
                        return False
            except TimeoutError:
                pass
        await slow.close()
        await other.close()
        return True

    assert asyncio.run(run())


def test_local_slots_cap_one_process() -> None:
    async def run() -> int:
        slots, now, peak = LocalSlots(), 0, 0

        async def hold() -> None:
            nonlocal now, peak
            async with slots.slot((1, "x.test"), 3):
                now += 1
                peak = max(peak, now)
                await asyncio.sleep(0.01)
                now -= 1

        await asyncio.gather(*(hold() for _ in range(10)))
        return peak

    assert asyncio.run(run()) == 3
