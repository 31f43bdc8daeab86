"""Idle SMTP connections reused between chunks (providers/smtp.py ConnectionPool), against
local DNS and aiosmtpd sinks over real sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailplane.delivery.providers.base import Envelope
from mailplane.delivery.providers.smtp import NativeMxProvider
from mailplane.delivery.results import Status
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import QueuedRecipient

pytestmark = pytest.mark.timeout(60) if hasattr(pytest.mark, "timeout") else []

_ids = iter(range(1, 1_000_000))


def envelopes(*recipients: str) -> list[Envelope]:
    return [
        Envelope(
            recipient_id=next(_ids),
            mail_from="bounces@acme.test",
            rcpt_to=rcpt,
            rcpt_domain=rcpt.rpartition("@")[2],
            data=f"From: a@acme.test\r\nTo: {rcpt}\r\nSubject: pool\r\n\r\nHi.\r\n".encode(),
        )
        for rcpt in recipients
    ]


@pytest.fixture
def mx(dns_server, mx_sinks, settings):
    """One accepting sink, the MX of dest.test and other.test."""
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_SMTP_TIMEOUT": 2.0}
    sink = mx_sinks("accept")
    for domain in ("dest.test", "other.test"):
        dns_server.mx(domain, "mx1.dest.test")
    dns_server.a("mx1.dest.test", sink.address)
    return sink


def delivered(results) -> bool:
    return all(r.status is Status.DELIVERED for r in results)


def received(sink) -> list[str]:
    return sorted(r.rcpt_tos[0] for r in sink.received)


def settled(sink) -> tuple[int, int, int]:
    """(connections, QUITs, still open) once the sink's side has caught up with ours."""
    deadline = time.monotonic() + 5
    while sink.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    return sink.connections, sink.quits, sink.open_connections


def test_a_later_chunk_reuses_the_idle_connection_and_aclose_quits_it(mx):
    provider = NativeMxProvider.from_config({})

    async def run() -> None:
        assert delivered(await provider.send(envelopes("a@dest.test", "b@dest.test")))
        assert (len(provider.pool), mx.open_connections, mx.quits) == (1, 1, 0)
        # Another domain on the same MX host shares it too: the key is the peer.
        assert delivered(await provider.send(envelopes("c@other.test")))
        assert delivered(await provider.send(envelopes("d@dest.test")))
        await provider.aclose()
        assert len(provider.pool) == 0

    asyncio.run(run())
    assert received(mx) == ["a@dest.test", "b@dest.test", "c@other.test", "d@dest.test"]
    assert settled(mx) == (1, 1, 0)


@pytest.mark.parametrize("noticed", [False, True], ids=["unnoticed", "noticed"])
def test_a_connection_dropped_while_idle_is_replaced_without_loss_or_duplicates(mx, noticed):
    provider = NativeMxProvider.from_config({})

    async def run() -> list:
        assert delivered(await provider.send(envelopes("a@dest.test", "b@dest.test")))
        # Called without yielding, the client has not read the EOF yet: its session still
        # looks open and only the RSET check finds out. Otherwise it has closed it itself.
        assert mx.drop_connections() == 1
        if noticed:
            await asyncio.sleep(0.1)
        # The pooled session fails its RSET check: a new connection carries the chunk.
        results = await provider.send(envelopes("c@dest.test", "d@dest.test"))
        await provider.aclose()
        return results

    results = asyncio.run(run())
    assert delivered(results)
    assert received(mx) == ["a@dest.test", "b@dest.test", "c@dest.test", "d@dest.test"]
    assert mx.connections == 2


def test_idle_connections_are_quit_after_the_idle_limit(mx, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_CONNECTION_IDLE_SECONDS": 0.2}
    provider = NativeMxProvider.from_config({})

    async def run() -> None:
        await provider.send(envelopes("a@dest.test"))
        assert len(provider.pool) == 1
        deadline = time.monotonic() + 5
        while (mx.quits < 1 or mx.open_connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(provider.pool) == 0 and mx.open_connections == 0
        await provider.send(envelopes("b@dest.test"))  # a new connection
        await provider.aclose()

    asyncio.run(run())
    assert settled(mx) == (2, 2, 0)
    assert received(mx) == ["a@dest.test", "b@dest.test"]


def test_a_connection_that_carried_its_limit_is_not_kept(mx, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_CONNECTION_MAX_MESSAGES": 3}
    provider = NativeMxProvider.from_config({})

    async def run() -> None:
        await provider.send(envelopes("a@dest.test", "b@dest.test"))
        assert len(provider.pool) == 1
        await provider.send(envelopes("c@dest.test"))  # the third: QUIT, not kept
        assert len(provider.pool) == 0 and mx.quits == 1
        await provider.send(envelopes("d@dest.test"))
        await provider.aclose()

    asyncio.run(run())
    assert settled(mx) == (2, 2, 0)


def test_reuse_can_be_turned_off(mx, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DELIVERY_CONNECTION_IDLE_SECONDS": 0}
    provider = NativeMxProvider.from_config({})

    async def run() -> None:
        for rcpt in ("a@dest.test", "b@dest.test"):
            await provider.send(envelopes(rcpt))
            assert len(provider.pool) == 0

    asyncio.run(run())
    assert settled(mx) == (2, 2, 0)


def test_a_connection_left_after_a_4xx_is_reused_cleanly(mx):
    mx.handler.rcpt_replies["later@dest.test"] = "451 4.7.1 greylisted"
    provider = NativeMxProvider.from_config({})

    async def run() -> tuple[list, list]:
        first = await provider.send(envelopes("later@dest.test"))
        second = await provider.send(envelopes("now@dest.test"))
        await provider.aclose()
        return first, second

    first, second = asyncio.run(run())
    assert first[0].status is Status.TEMPORARY and first[0].reply == "451 4.7.1 greylisted"
    assert delivered(second)
    assert received(mx) == ["now@dest.test"] and mx.connections == 1


def test_run_once_chunks_share_a_connection_and_quit_it_at_the_end(sender, mx):
    for n in range(3):
        sender.send(f"user{n}@dest.test", subject=f"d{n}")
        sender.send(f"user{n}@other.test", subject=f"o{n}")

    # One chunk at a time: the second domain's chunk finds the first one's connection.
    assert DeliveryWorker(rng=lambda: 0.5, concurrency=1).run_once() == 6

    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {"delivered"}
    assert len(mx.received) == 6
    assert settled(mx) == (1, 1, 0)


def test_the_service_reuses_connections_across_batches_and_quits_them_on_stop(
    transactional_db, sender, mx
):
    for n in range(3):
        sender.send(f"user{n}@dest.test", subject=f"a{n}")

    async def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(mx.received) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(mx.received) == count

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(DeliveryWorker(rng=lambda: 0.5).run_forever(stop))
        await wait_for(3)
        # A later batch, claimed on a later pass: same MX, same (idle) connection.
        for n in range(2):
            await asyncio.to_thread(sender.send, f"late{n}@dest.test", subject=f"b{n}")
        await wait_for(5)
        assert mx.quits == 0
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(run())
    assert len(mx.received) == 5
    assert settled(mx) == (1, 1, 0)


def test_connections_of_a_finished_event_loop_are_never_reused(mx):
    provider = NativeMxProvider.from_config({})
    # A caller that forgets aclose(): the idle session dies with its loop...
    asyncio.run(provider.send(envelopes("a@dest.test")))
    assert len(provider.pool) == 1
    # ...and the next loop connects afresh instead of touching it.
    results = asyncio.run(provider.send(envelopes("b@dest.test")))
    assert delivered(results)
    assert received(mx) == ["a@dest.test", "b@dest.test"]
    assert mx.connections == 2
