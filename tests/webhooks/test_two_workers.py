"""Two webhook workers over one outbox (as `mailplane serve` runs them on two hosts):
a claim never hands one delivery to both, so with nobody killed every event reaches the
receiver exactly once, each recorded by one attempt, and the endpoint's concurrency cap
holds across both workers."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mailplane.queue.models import EventType, RecipientStatus
from mailplane.webhooks.models import DeliveryState, WebhookAttempt, WebhookDelivery
from tests.support.fixtures import wait_for
from tests.support.webhook_receiver import Answer
from tests.webhooks.conftest import Hooked, send, step
from tests.webhooks.test_worker_killed import _worker

pytestmark = [pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]
MESSAGES = 40


def test_two_workers_deliver_each_event_once_within_the_cap(hooked: Hooked):
    rec = hooked.receiver
    rec.script = lambda n, body: Answer(delay=0.01)  # both claim while requests run
    for i in range(MESSAGES):
        (row,) = send(hooked, to=f"r{i}@dest.test")
        step(row, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    total = 2 * MESSAGES  # queued + delivered per message

    workers = [_worker(), _worker()]
    try:
        wait_for(
            lambda: (
                WebhookDelivery.objects.count() == total
                and not WebhookDelivery.objects.exclude(state=DeliveryState.DELIVERED).exists()
            ),
            timeout=90,
            what="every delivery delivered",
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert worker.wait(30) == 0, worker.stderr.read() if worker.stderr else ""

    accepted = Counter(r.headers["webhook-id"] for r in rec.accepted())
    assert set(accepted) == set(WebhookDelivery.objects.values_list("webhook_id", flat=True))
    assert max(accepted.values()) == 1, "a delivery was sent twice"
    assert WebhookAttempt.objects.count() == total  # one attempt each, every one recorded
    assert rec.max_in_flight <= hooked.endpoint.max_concurrency
    # Each message's events in order: its `queued` before its `delivered`.
    order: dict[int, list[str]] = {}
    for r in rec.accepted():
        payload = json.loads(r.body)
        order.setdefault(payload["data"]["message_id"], []).append(payload["type"])
    assert all(kinds == ["queued", "delivered"] for kinds in order.values())
