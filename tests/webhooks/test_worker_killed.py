"""Killing the webhook worker mid-run (SIGKILL: no drain, no cleanup) loses no event, and
duplicates only what was in flight, under the same webhook-id (what Standard Webhooks
lets a receiver drop). The service runs as `mailplane serve` starts it: its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
from django.db import connection

from mailplane.queue.models import DeliveryEvent, EventType, RecipientStatus
from mailplane.webhooks.models import DeliveryState, WebhookDelivery
from tests.support.fixtures import wait_for
from tests.support.webhook_receiver import Answer
from tests.webhooks.conftest import FAST_SCHEDULE, Hooked, send, step

pytestmark = [pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]
MESSAGES = 30


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _worker() -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "MAILPLANE_WEBHOOKS_ALLOW_PRIVATE": "1",
        "MAILPLANE_WEBHOOKS_RETRY_SCHEDULE": FAST_SCHEDULE,
        "MAILPLANE_WEBHOOKS_TIMEOUT": "1",
        "MAILPLANE_WEBHOOKS_LEASE_SECONDS": "1",  # with the timeout: a 7 s lease
        "MAILPLANE_LOG_LEVEL": "WARNING",
    }
    env.pop("PYTEST_VERSION", None)
    return subprocess.Popen(
        [sys.executable, "-m", "mailplane.webhooks"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_killed_worker_loses_nothing_and_duplicates_only_by_webhook_id(hooked: Hooked):
    rec = hooked.receiver
    # Slow answers, and every seventh request fails once: retries are in the mix too.
    rec.script = lambda n, body: Answer(500) if n % 7 == 3 else Answer(delay=0.02)
    for i in range(MESSAGES):
        (row,) = send(hooked, to=f"r{i}@dest.test")
        step(row, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")

    first = _worker()
    try:
        wait_for(lambda: len(rec.accepted()) >= 15, timeout=60, what="the first deliveries")
    finally:
        first.kill()  # SIGKILL: whatever it held in flight is lost with it
        first.wait(10)
    assert len(rec.accepted()) < 2 * MESSAGES, "killed too late to test anything"
    # More events while no worker runs: the next one must pick them up as well.
    for i in range(5):
        send(hooked, to=f"late{i}@dest.test")

    second = _worker()
    try:
        wait_for(
            lambda: (
                WebhookDelivery.objects.count() == 2 * MESSAGES + 5
                and not WebhookDelivery.objects.exclude(state=DeliveryState.DELIVERED).exists()
            ),
            timeout=90,
            what="every delivery delivered",
        )
    finally:
        second.terminate()
        assert second.wait(30) == 0, second.stderr.read() if second.stderr else ""

    events = DeliveryEvent.objects.filter(message__server_link__server=hooked.live.server)
    deliveries = {d.webhook_id: d for d in WebhookDelivery.objects.all()}
    # One delivery per event: none missed, none invented by the consumer.
    assert sorted(d.event_seq for d in deliveries.values()) == sorted(
        events.values_list("seq", flat=True)
    )
    accepted = Counter(r.headers["webhook-id"] for r in rec.accepted())
    assert set(accepted) == set(deliveries)  # every event reached the receiver
    duplicated = {wid: n for wid, n in accepted.items() if n > 1}
    # Only what the dead worker had in flight may come twice, and with the same id.
    assert sum(n - 1 for n in duplicated.values()) <= hooked.endpoint.max_concurrency
    bodies: dict[str, set[bytes]] = {}
    for r in rec.accepted():
        bodies.setdefault(r.headers["webhook-id"], set()).add(r.body)
    assert all(len(b) == 1 for b in bodies.values())  # a duplicate is the same body
