"""The service loop (`run_forever`): database work on its own thread, sends on the loop."""

from __future__ import annotations

import asyncio
import time

from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient


def test_run_forever_delivers_everything_and_records_every_outcome(
    transactional_db, sender, dns_server, mx_sinks
):
    good, bad = mx_sinks("accept"), mx_sinks("reject")
    for n in range(3):
        dns_server.mx(f"d{n}.test", f"mx{n}.test")
        dns_server.a(f"mx{n}.test", good.address)
    dns_server.mx("bad.test", "mxbad.test")
    dns_server.a("mxbad.test", bad.address)
    for n in range(30):
        sender.send(f"user{n}@d{n % 3}.test", subject=f"n{n}")
    sender.send("nobody@bad.test")

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(DeliveryWorker(batch_size=7).run_forever(stop))
        deadline = time.monotonic() + 20
        while len(good.received) < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # Every row was claimed in the first passes (7 + 7 + ... without waiting), and
        # stopping waits for in-flight sends and records them, the bounce included.
        stop.set()
        await asyncio.wait_for(task, 20)

    asyncio.run(run())
    statuses = list(QueuedRecipient.objects.order_by("id").values_list("status", flat=True))
    assert statuses == ["delivered"] * 30 + ["bounced"]
    assert DeliveryEvent.objects.filter(type="delivered").count() == 30
    assert len(good.received) == 30  # nothing sent twice


def test_record_writes_batches_and_drops_outcomes_for_rows_lost_to_another_worker(sender):
    from mailplane.delivery.processor import Outcome
    from mailplane.delivery.results import SendResult

    messages = [sender.send(f"user{n}@far.test", subject=f"m{n}") for n in range(4)]
    worker = DeliveryWorker(rng=lambda: 0.5)
    rows = worker.claim()
    assert len(rows) == 4
    # Row 0's lease ran out and another worker took it while we were sending.
    QueuedRecipient.objects.filter(pk=rows[0].pk).update(claimed_by="other-worker")
    ok = SendResult.delivered("250 2.0.0 OK", "mx.far.test")
    later = SendResult.temporary("451 4.7.1 later", "mx.far.test")
    worker.record([Outcome(rows[0], ok), Outcome(rows[1], ok), Outcome(rows[2], ok)])
    worker.record([Outcome(rows[3], later)])
    by_pk = {r.pk: r for r in QueuedRecipient.objects.all()}
    assert (by_pk[rows[0].pk].status, by_pk[rows[0].pk].claimed_by) == ("queued", "other-worker")
    for row in rows[1:3]:
        got = by_pk[row.pk]
        assert (got.status, got.attempts, got.claimed_by, got.last_reply) == (
            "delivered",
            1,
            "",
            "250 2.0.0 OK",
        )
        assert got.next_attempt_at == row.next_attempt_at  # unchanged
    deferred = by_pk[rows[3].pk]
    assert (deferred.status, deferred.attempts) == ("deferred", 1)
    assert deferred.next_attempt_at > rows[3].next_attempt_at
    kinds = sorted(DeliveryEvent.objects.exclude(type="queued").values_list("type", flat=True))
    assert kinds == ["deferred", "delivered", "delivered"]
    assert not DeliveryEvent.objects.filter(message=messages[0]).exclude(type="queued").exists()
