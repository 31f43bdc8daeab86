"""The code the tests drive is the code production runs (issue 10, "one worker path").

Most delivery tests call `DeliveryWorker.run_once`; `mailplane serve` runs `run_forever`.
These tests fail if the two drift apart: structurally (both must go through the one cycle,
and neither may claim, prepare, sign, send or record by itself), and by behaviour that
only the service loop used to have: a destination slot another worker holds, and the
lease heartbeat, are honoured by `run_once` too.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
import threading
import time
from typing import Any

import redis
from django.db import connection

from mailplane.delivery import worker as worker_module
from mailplane.delivery.limits import SharedSlots
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import QueuedRecipient
from mailplane.relays.models import RelayServer

# What a cycle does, step by step: the entry points may reach these only through it.
STEPS = {
    "claim",
    "prepare",
    "record",
    "renew",
    "groups",
    "deliver",
    "send_chunk",
    "send",
    "_sign_on_loop",
    "destination_slots",
    "recipients_claim",
    "batch_prepare",
    "outcomes_record",
}


def _called(function: Any) -> set[str]:
    """Names of everything `function` calls (`f()`, `x.f()`) or hands to a call (an executor's
    `call(worker.claim, ...)`), from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for target in [node.func, *node.args]:
                if isinstance(target, ast.Attribute):
                    names.add(target.attr)
                elif isinstance(target, ast.Name):
                    names.add(target.id)
    return names


def test_the_service_and_run_once_go_through_the_same_cycle() -> None:
    service = _called(DeliveryWorker.run_forever)
    batch = _called(DeliveryWorker.run_batch)
    assert {"_running", "cycle"} <= service, "run_forever no longer runs _Run.cycle"
    assert {"_running", "cycle"} <= batch, "run_batch no longer runs _Run.cycle"
    assert "run_batch" in _called(DeliveryWorker.run_once)
    for name, calls in {"run_forever": service, "run_batch": batch}.items():
        assert not calls & STEPS, f"{name} does {calls & STEPS} outside the shared cycle"
    assert not _called(DeliveryWorker.run_once) & STEPS
    # One run (held rows, heartbeat, destination slots) is made in one place, for both.
    makers = [
        name
        for name, member in inspect.getmembers(DeliveryWorker, inspect.isfunction)
        if "_Run" in _called(member)
    ]
    assert makers == ["_running"]
    assert "heartbeat" in _called(DeliveryWorker._running)
    assert "drain" in _called(DeliveryWorker._running)
    # And the one cycle is the one that claims.
    assert {"claim", "prepare", "groups", "deliver"} <= _called(worker_module._Run.cycle)


def test_run_once_waits_for_a_destination_slot_another_worker_holds(
    sender: Any, dns_server: Any, mx_sinks: Any, settings: Any, redis_url: str
) -> None:
    """With a cap of one connection and that one held by a (crashed) worker in Redis, the
    delivery must wait for the holder's lease to end. The old `run_once` ignored the shared
    caps and would send at once."""
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "REDIS_URL": redis_url,
        "DELIVERY_MAX_CONNECTIONS_PER_DOMAIN": 1,
    }
    sink = mx_sinks("accept")
    domain = f"capped-{time.monotonic_ns()}.test"
    dns_server.mx(domain, f"mx.{domain}")
    dns_server.a(f"mx.{domain}", sink.address)
    sender.send(f"user@{domain}")
    relay: RelayServer = sender.relay
    key = SharedSlots.key((relay.pk, domain))
    client = redis.Redis.from_url(redis_url)
    seconds, micros = client.time()
    # One second from now on the Redis clock, in the milliseconds _ACQUIRE compares.
    held_ms = seconds * 1000 + micros // 1000 + 1000
    held_until = held_ms / 1000
    client.zadd(key, {"crashed-worker:0": held_ms})
    arrived: list[float] = []
    original = sink.handler.handle_DATA

    async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
        seconds, micros = client.time()
        arrived.append(seconds + micros / 1e6)
        return str(await original(server, session, envelope))

    sink.handler.handle_DATA = handle_DATA
    try:
        assert DeliveryWorker(rng=lambda: 0.5).run_once() == 1
    finally:
        client.delete(key)
    assert len(arrived) == 1
    assert arrived[0] >= held_until, "run_once sent while another worker held the only slot"
    assert QueuedRecipient.objects.get().status == "delivered"


def test_run_once_renews_its_lease_while_a_send_is_slow(
    transactional_db: Any, sender: Any, dns_server: Any, mx_sinks: Any, settings: Any
) -> None:
    """A pass slower than the lease keeps its claim (the heartbeat runs in run_once as in
    the service): a rival claiming all along takes nothing, and the row is sent once."""
    lease = 3.0
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_LEASE_SECONDS": lease,
        "DELIVERY_SMTP_TIMEOUT": 60.0,
    }
    sink = mx_sinks("accept")
    entered, release = threading.Event(), threading.Event()
    original = sink.handler.handle_DATA

    async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.02)
        return str(await original(server, session, envelope))

    sink.handler.handle_DATA = handle_DATA
    dns_server.mx("slow.test", "mx.slow.test")
    dns_server.a("mx.slow.test", sink.address)
    message = sender.send("user@slow.test")
    stolen: list[QueuedRecipient] = []
    problems: list[str] = []

    def rival() -> None:
        """Claims as another worker for two leases past the first lease's end."""
        try:
            if not entered.wait(30):
                problems.append("delivery never reached DATA")
                return
            first_until = QueuedRecipient.objects.get(message=message).claimed_until
            assert first_until is not None
            other = DeliveryWorker(worker_id="rival")
            while time.time() < first_until.timestamp() + 2 * lease:
                stolen.extend(other.claim())
                time.sleep(0.05)
        except Exception as exc:  # a rival that stopped claiming would prove nothing
            problems.append(repr(exc))
        finally:
            release.set()
            connection.close()

    thread = threading.Thread(target=rival, name="rival-worker")
    thread.start()
    try:
        assert DeliveryWorker().run_once() == 1
    finally:
        release.set()
        thread.join(30)
    assert problems == []
    assert stolen == [], "another worker took run_once's claim: no heartbeat"
    row = QueuedRecipient.objects.get(message=message)
    assert (row.status, row.attempts, row.claimed_by) == ("delivered", 1, "")
    assert len(sink.received) == 1


def test_run_once_works_in_the_callers_transaction_and_leaves_no_thread_behind(
    sender: Any, dns_server: Any, mx_sinks: Any
) -> None:
    """run_once's database work runs on the caller's thread (it sees this test's open
    transaction) and its sends on a loop of their own: no thread or loop outlives it."""
    sink = mx_sinks("accept")
    dns_server.mx("far.test", "mx.far.test")
    dns_server.a("mx.far.test", sink.address)
    sender.send("a@far.test", "b@far.test")
    before = set(threading.enumerate())
    assert DeliveryWorker(rng=lambda: 0.5).run_once() == 2
    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {"delivered"}
    assert {t.name for t in set(threading.enumerate()) - before} == set()
