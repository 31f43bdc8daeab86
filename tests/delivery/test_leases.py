"""Claim leases: short, renewed on a heartbeat while the worker holds the rows.

A dead worker's rows come back within one lease (tests/e2e/test_delivery_crash.py kills a
real worker); these tests show the other half: a live worker whose delivery outlasts the
lease many times over keeps its claim, so no other worker takes the row and sends it twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from mailplane.delivery.claims import recipients_renew
from mailplane.delivery.config import DEFAULTS
from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import QueuedRecipient
from tests.support.tools import skip_for_mode

pytestmark = pytest.mark.timeout(120)


def test_the_default_lease_is_short_and_the_environment_still_sets_it(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MAILPLANE = {
        k: v for k, v in settings.MAILPLANE.items() if k != "DELIVERY_LEASE_SECONDS"
    }
    monkeypatch.delenv("MAILPLANE_DELIVERY_LEASE_SECONDS", raising=False)
    assert DeliveryWorker().lease == timedelta(seconds=30)
    assert DEFAULTS["DELIVERY_LEASE_SECONDS"] <= 60  # a dead worker's rows within a minute
    monkeypatch.setenv("MAILPLANE_DELIVERY_LEASE_SECONDS", "600")
    assert DeliveryWorker().lease == timedelta(minutes=10)
    monkeypatch.setenv("MAILPLANE_DELIVERY_LEASE_SECONDS", "2.5")
    assert DeliveryWorker().lease == timedelta(seconds=2.5)


def test_renew_extends_only_rows_still_ours_and_unfinished(sender: Any) -> None:
    for n in range(3):
        sender.send(f"user{n}@far.test", subject=f"m{n}")
    worker = DeliveryWorker(lease=timedelta(seconds=30))
    t0 = timezone.now()
    rows = worker.claim(now=t0)
    assert len(rows) == 3
    taken, done, mine = rows
    QueuedRecipient.objects.filter(pk=taken.pk).update(claimed_by="other-worker")
    QueuedRecipient.objects.filter(pk=done.pk).update(status="delivered")
    later = t0 + timedelta(seconds=25)
    gone = recipients_renew(
        worker_id=worker.worker_id,
        ids={r.pk for r in rows},
        lease=worker.lease,
        now=later,
    )
    assert gone == {taken.pk, done.pk}
    until = dict(QueuedRecipient.objects.values_list("pk", "claimed_until"))
    assert until[mine.pk] == later + timedelta(seconds=30)
    assert until[taken.pk] == until[done.pk] == t0 + timedelta(seconds=30)


def _hold_data(sink: Any, held: list[str] | None = None) -> tuple[threading.Event, threading.Event]:
    """The sink's DATA waits until `release` is set; `entered` says one is waiting (its
    recipients are added to `held`)."""
    entered, release = threading.Event(), threading.Event()
    original = sink.handler.handle_DATA

    async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
        if held is not None:
            held.extend(envelope.rcpt_tos)
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.02)
        return str(await original(server, session, envelope))

    sink.handler.handle_DATA = handle_DATA
    return entered, release


def test_a_live_worker_slower_than_its_lease_keeps_its_claim(
    transactional_db: Any, sender: Any, dns_server: Any, mx_sinks: Any, settings: Any
) -> None:
    lease = 3.0  # renewed every second: two late beats on a loaded machine still keep it
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_LEASE_SECONDS": lease,
        "DELIVERY_SMTP_TIMEOUT": 60.0,  # the held DATA must not time out instead
    }
    sink = mx_sinks("accept")
    entered, release = _hold_data(sink)
    dns_server.mx("slow.test", "mx.slow.test")
    dns_server.a("mx.slow.test", sink.address)
    message = sender.send("user@slow.test")

    def row() -> QueuedRecipient:
        return QueuedRecipient.objects.get(message=message)

    rival = DeliveryWorker(worker_id="rival")

    async def run() -> tuple[list[QueuedRecipient], Any, Any]:
        stop = asyncio.Event()
        task = asyncio.create_task(DeliveryWorker().run_forever(stop))
        try:
            assert await asyncio.to_thread(entered.wait, 30), "delivery never reached DATA"
            first_until = (await asyncio.to_thread(row)).claimed_until
            assert first_until is not None
            # Hold the DATA until the first lease is two leases gone: without renewals the
            # rival would have taken the row (and sent it again) long before.
            stolen: list[QueuedRecipient] = []
            while timezone.now() < first_until + timedelta(seconds=2 * lease):
                stolen += await asyncio.to_thread(rival.claim)
                await asyncio.sleep(0.05)
            renewed_until = (await asyncio.to_thread(row)).claimed_until
            release.set()
            deadline = time.monotonic() + 30
            while not sink.received and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            release.set()
            stop.set()
            await asyncio.wait_for(task, 30)
        return stolen, first_until, renewed_until

    stolen, first_until, renewed_until = asyncio.run(run())
    assert stolen == [], "another worker took a live worker's claim"
    assert renewed_until > first_until + timedelta(seconds=lease)
    got = row()
    assert (got.status, got.attempts, got.claimed_by) == ("delivered", 1, "")
    assert len(sink.received) == 1


def test_a_row_another_worker_took_is_not_sent_from_here(
    transactional_db: Any, sender: Any, dns_server: Any, mx_sinks: Any, settings: Any
) -> None:
    """Should a lease still run out (a stalled heartbeat) and another worker take the row,
    the heartbeat notices, and a send that has not started yet does not start: only the
    new owner sends it."""
    lease = 3.0
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DELIVERY_LEASE_SECONDS": lease,
        "DELIVERY_SMTP_TIMEOUT": 60.0,
    }
    sink = mx_sinks("accept")
    in_data: list[str] = []
    entered, release = _hold_data(sink, in_data)
    for domain in ("a.test", "b.test"):
        dns_server.mx(domain, f"mx.{domain}")
        dns_server.a(f"mx.{domain}", sink.address)
    for to in ("user@a.test", "user@b.test"):
        sender.send(to)

    def rows() -> dict[str, QueuedRecipient]:
        return {r.rcpt_to: r for r in QueuedRecipient.objects.all()}

    async def run() -> tuple[str, str]:
        stop = asyncio.Event()
        # One send at a time: the second destination waits while the first is held.
        task = asyncio.create_task(DeliveryWorker(concurrency=1).run_forever(stop))
        try:
            assert await asyncio.to_thread(entered.wait, 30), "delivery never reached DATA"
            [sending] = in_data
            [waiting] = {"user@a.test", "user@b.test"} - {sending}
            await asyncio.to_thread(
                QueuedRecipient.objects.filter(rcpt_to=waiting).update,
                claimed_by="rival",
                claimed_until=timezone.now() + timedelta(minutes=10),
            )
            stolen_at = timezone.now()
            # Two renewals made after the theft: the heartbeat loop is sequential, so the
            # first one's finding (the row is gone) is in place by the second.
            renewals: set[Any] = set()
            deadline = time.monotonic() + 30
            while len(renewals) < 2:
                assert time.monotonic() < deadline, "the heartbeat stopped"
                until = (await asyncio.to_thread(rows))[sending].claimed_until
                if until is not None and until > stolen_at + timedelta(seconds=lease):
                    renewals.add(until)
                await asyncio.sleep(0.02)
            release.set()
            deadline = time.monotonic() + 30
            while (await asyncio.to_thread(rows))[sending].status != "delivered":
                assert time.monotonic() < deadline, "the held delivery never finished"
                await asyncio.sleep(0.02)
        finally:
            release.set()
            stop.set()
            await asyncio.wait_for(task, 30)
        return sending, waiting

    sending, waiting = asyncio.run(run())
    assert [r.rcpt_tos for r in sink.received] == [[sending]]
    taken = rows()[waiting]
    assert (taken.status, taken.attempts, taken.claimed_by) == ("queued", 0, "rival")


def test_a_renewal_never_waits_on_a_row_another_transaction_holds(
    transactional_db: Any, sender: Any
) -> None:
    """PostgreSQL: the heartbeat skips a row locked elsewhere (say the worker's own record
    of it, which locks rows in another order) instead of waiting: no deadlock, no stall."""
    from django.db import connection, transaction

    if not connection.features.has_select_for_update_skip_locked:
        skip_for_mode("SQLite has one writer: nothing to wait on")
    for n in range(2):
        sender.send(f"user{n}@far.test", subject=f"m{n}")
    worker = DeliveryWorker(lease=timedelta(seconds=30))
    locked, free = worker.claim()
    holding, done, released = threading.Event(), threading.Event(), threading.Event()

    def hold_lock() -> None:
        with transaction.atomic():
            list(QueuedRecipient.objects.select_for_update().filter(pk=locked.pk))
            holding.set()
            done.wait(20)
            released.set()
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert holding.wait(20)
        later = timezone.now() + timedelta(seconds=10)
        gone = worker.renew({locked.pk, free.pk}, now=later)
        assert not released.is_set(), "the renewal waited for the other transaction"
    finally:
        done.set()
        holder.join(30)
    assert gone == set()  # skipped this beat, not lost
    until = dict(QueuedRecipient.objects.values_list("pk", "claimed_until"))
    assert until[free.pk] == later + timedelta(seconds=30)
    assert until[locked.pk] == locked.claimed_until  # renewed on a later beat
