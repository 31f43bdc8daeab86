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
