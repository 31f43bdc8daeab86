"""A delivery worker killed mid-delivery (SIGKILL: no cleanup, no goodbye) loses nothing:
`mailplane serve` restarts it, the new worker takes over the dead one's claims once their
lease runs out, and every queued message reaches the destination MX.

Real processes throughout: `mailplane serve --only delivery` on the embedded defaults, a
local DNS server, and an aiosmtpd MX on its own 127.x address that holds every DATA for a
moment so that the kill lands while messages are in flight.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from tests.support.live_service import LiveService, live_service
from tests.support.smtp_sink import Sink, free_port

pytestmark = pytest.mark.timeout(180)
MESSAGES = 30

ENQUEUE = """
from mailplane.domains.services import domain_create
from mailplane.queue.services import message_enqueue
from mailplane.tenancy.services import organization_create
org = organization_create(name="Crash", owner_email="ops@crash.test", plan="enterprise")
relay = org.relay_servers.first()
domain = domain_create(organization=org, name="crash-sender.test", relay_server=relay)
for n in range({count}):
    raw = (
        f"From: <a@crash-sender.test>\\r\\nTo: <u{{n}}@dest.test>\\r\\nSubject: n{{n}}\\r\\n"
        f"Message-ID: <{{n}}@crash-sender.test>\\r\\n\\r\\nbody {{n}}\\r\\n"
    ).encode()
    message_enqueue(organization=org, mail_from="a@crash-sender.test",
                    recipients=[f"u{{n}}@dest.test"], raw=raw, relay_server=relay, domain=domain)
"""

COUNT_DELIVERED = """
from mailplane.queue.models import QueuedRecipient
print("delivered", QueuedRecipient.objects.filter(status="delivered").count())
"""


def _slow(sink: Sink, hold: float) -> None:
    original = sink.handler.handle_DATA

    async def handle_DATA(server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(hold)
        return str(await original(server, session, envelope))

    sink.handler.handle_DATA = handle_DATA  # type: ignore[method-assign]


def _delivery_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"started delivery \(pid (\d+)\)", log.read_text())]


def _subjects(sink: Sink) -> list[str]:
    return [str(message_from_bytes(r.data)["Subject"]) for r in sink.received]


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_killed_delivery_worker_loses_nothing_and_its_successor_finishes(tmp_path: Path):
    mx_port = free_port()
    sink = Sink(f"127.77.{os.getpid() % 250}.2", mx_port).start()
    _slow(sink, hold=0.2)  # ~5 messages/s per connection: the kill finds some in flight
    env = {
        "MAILPLANE_DELIVERY_MX_PORT": str(mx_port),
        "MAILPLANE_DELIVERY_LEASE_SECONDS": "3",
        "MAILPLANE_DELIVERY_SMTP_TIMEOUT": "10",
    }
    try:
        with live_service(tmp_path, "delivery", env=env) as (svc, dns):
            dns.mx("dest.test", "mx.dest.test")
            dns.a("mx.dest.test", sink.address)
            log = tmp_path / "serve.log"
            _wait(lambda: len(_delivery_pids(log)) == 1, 60, "delivery never started")
            svc.cli("manage", "shell", "-c", ENQUEUE.format(count=MESSAGES))
            _wait(lambda: len(sink.received) >= 3, 60, "delivery did not begin")

            os.kill(_delivery_pids(log)[0], signal.SIGKILL)
            received_at_kill = len(sink.received)
            assert received_at_kill < MESSAGES, "everything was delivered before the kill"
            _wait(lambda: len(_delivery_pids(log)) == 2, 30, "serve did not restart delivery")
            _wait(
                lambda: set(_subjects(sink)) >= {f"n{n}" for n in range(MESSAGES)},
                90,
                f"not every message arrived after the restart: {sorted(set(_subjects(sink)))}",
            )
            delivered = _delivered_count(svc)
    finally:
        sink.stop()
    assert delivered == MESSAGES
    # At most the dead worker's in-flight messages arrive twice (RFC 5321 §6.1 prefers a
    # duplicate to a loss); everything else exactly once.
    duplicates = len(sink.received) - MESSAGES
    assert 0 <= duplicates <= MESSAGES - received_at_kill


def _delivered_count(svc: LiveService) -> int:
    deadline = time.monotonic() + 30
    while True:
        out = svc.cli("manage", "shell", "-c", COUNT_DELIVERED)
        count = int(out.split("delivered")[-1])
        if count == MESSAGES or time.monotonic() > deadline:
            return count
        time.sleep(0.2)
