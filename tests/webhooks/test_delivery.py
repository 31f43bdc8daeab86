"""Webhook delivery end to end: events from the queue's stream to a local receiver, signed
(verified with the Standard Webhooks reference library), retried, in order per message."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from mailplane.queue.models import EventType, RecipientStatus
from mailplane.webhooks.consumer import events_consume
from mailplane.webhooks.models import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookNotice,
)
from mailplane.webhooks.runner import WebhookWorker
from tests.support.webhook_receiver import Answer
from tests.webhooks.conftest import Hooked, send, step

pytestmark = pytest.mark.timeout(60)


def _message_life(hooked: Hooked) -> list[tuple[str, str | None]]:
    """A message to two recipients: carol's delivered then unsubscribed, dave's deferred
    then bounced. Returns the (type, recipient) the receiver must see, per recipient in
    this order."""
    carol, dave = send(hooked, to=["carol@dest.test", "dave@dest.test"], tags=["welcome"])
    step(carol, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 2.0.0 queued as X1")
    step(
        dave,
        EventType.DEFERRED,
        RecipientStatus.DEFERRED,
        "451 4.7.1 try later",
        bounce_class="rate_limit",
    )
    step(
        dave,
        EventType.BOUNCED,
        RecipientStatus.BOUNCED,
        "550 5.1.1 no such user",
        bounce_class="hard",
    )
    step(carol, EventType.UNSUBSCRIBED, None, "list-unsubscribe")
    return [
        ("queued", "carol@dest.test"),
        ("queued", "dave@dest.test"),
        ("delivered", "carol@dest.test"),
        ("deferred", "dave@dest.test"),
        ("bounced", "dave@dest.test"),
        ("unsubscribed", "carol@dest.test"),
    ]


def test_a_message_life_arrives_once_each_signed_after_five_failures(hooked: Hooked):
    rec = hooked.receiver
    rec.script = lambda n, body: Answer(500, b"not yet") if n < 5 else Answer(200)
    expected = _message_life(hooked)

    WebhookWorker().run_until_idle(timeout=30)

    accepted = rec.accepted()
    assert len(rec.received) == 5 + len(expected)  # five refusals, then each once
    ids = [r.headers["webhook-id"] for r in accepted]
    assert len(set(ids)) == len(ids) == len(expected)
    wh = Webhook(hooked.secret)
    seen = []
    for r in accepted:
        payload = wh.verify(r.body, r.headers)  # the reference library
        assert set(payload) == {"type", "timestamp", "data"}
        data = payload["data"]
        assert data["server_id"] == hooked.live.server.pk
        assert (data["stream"], data["tags"], data["sandbox"]) == ("outbound", ["welcome"], False)
        seen.append((payload["type"], data["recipient"]))
        if payload["type"] == "deferred":
            assert data["bounce_class"] == "rate_limit"
        if payload["type"] == "bounced":
            assert data["bounce_class"] == "hard"
            assert data["remote_reply"] == "550 5.1.1 no such user"
    assert sorted(seen) == sorted(expected)
    # In order per message: the stream's order (one message here).
    assert seen == expected
    # Every attempt is kept: five failures with their status, then the successes.
    attempts = list(WebhookAttempt.objects.order_by("id"))
    assert [a.status_code for a in attempts] == [500] * 5 + [200] * len(expected)
    assert attempts[0].response_excerpt == "not yet"
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}


def test_a_later_event_waits_for_the_earlier_one_of_its_message(hooked: Hooked):
    rec = hooked.receiver
    first_body: list[bytes] = []

    def script(n: int, body: bytes) -> Answer:
        if not first_body:
            first_body.append(body)
        # The first event of the message fails three times; nothing else may overtake it.
        return Answer(503) if body == first_body[0] and n < 3 else Answer(200)

    rec.script = script
    (carol,) = send(hooked)
    step(carol, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
    WebhookWorker().run_until_idle(timeout=20)
    types = [json.loads(r.body)["type"] for r in rec.received]
    assert types == ["queued", "queued", "queued", "queued", "delivered"]


def test_retry_after_is_honoured(hooked: Hooked):
    rec = hooked.receiver
    rec.script = lambda n, body: Answer(429, headers={"Retry-After": "1"}) if n == 0 else Answer()
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    assert [r.status for r in rec.received] == [429, 200]
    gap = rec.received[1].at - rec.received[0].at
    assert gap >= 0.95  # the schedule alone would retry after 0.05 s


def test_410_disables_the_endpoint_and_tells_the_account(hooked: Hooked):
    hooked.receiver.script = lambda n, body: Answer(410, b"gone")
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    endpoint = WebhookEndpoint.objects.get(pk=hooked.endpoint.pk)
    assert not endpoint.enabled
    assert "410" in endpoint.disabled_reason
    assert len(hooked.receiver.received) == 1  # no retry to a gone endpoint
    notice = WebhookNotice.objects.get(endpoint=endpoint)
    assert notice.organization_id == hooked.live.account.org.pk
    listed = hooked.live.account.client.get("/api/webhook-notices/").json()
    assert listed["results"][0]["kind"] == "endpoint_disabled"
    assert "410" in listed["results"][0]["message"]
    # Nothing new is queued for a disabled endpoint.
    send(hooked)
    events_consume()
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 1


def test_the_schedule_runs_out_and_the_delivery_is_given_up(hooked: Hooked, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "WEBHOOKS_RETRY_SCHEDULE": "0.05,0.05"}
    hooked.receiver.script = lambda n, body: Answer(500)
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == (DeliveryState.FAILED, 3)
    assert len(hooked.receiver.received) == 3
    assert WebhookEndpoint.objects.get(pk=hooked.endpoint.pk).failing_since is not None


def test_an_endpoint_failing_for_too_long_is_disabled(hooked: Hooked, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "WEBHOOKS_DISABLE_AFTER": 0.2}
    hooked.receiver.script = lambda n, body: Answer(500)
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    endpoint = WebhookEndpoint.objects.get(pk=hooked.endpoint.pk)
    assert not endpoint.enabled
    assert "too long" in endpoint.disabled_reason
    assert WebhookNotice.objects.filter(endpoint=endpoint, kind="endpoint_disabled").count() == 1


def test_the_concurrency_cap_holds_per_endpoint(hooked: Hooked):
    WebhookEndpoint.objects.filter(pk=hooked.endpoint.pk).update(max_concurrency=2)
    hooked.receiver.script = lambda n, body: Answer(delay=0.2)
    for i in range(4):
        send(hooked, to=f"r{i}@dest.test")  # four messages: no order holds them back
    WebhookWorker().run_until_idle(timeout=20)
    assert len(hooked.receiver.accepted()) == 4
    assert hooked.receiver.max_in_flight == 2


def test_a_huge_answer_is_cut_and_a_slow_one_times_out(hooked: Hooked, settings):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "WEBHOOKS_TIMEOUT": 0.5,
        "WEBHOOKS_RETRY_SCHEDULE": "0.05",
    }
    hooked.receiver.script = lambda n, body: (
        Answer(500, b"x" * 5_000_000) if n == 0 else Answer(delay=2)
    )
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    first, second = WebhookAttempt.objects.order_by("id")
    assert first.status_code == 500 and len(first.response_excerpt) == 1024
    assert second.status_code is None and "timed out" in second.error
    assert WebhookDelivery.objects.get().state == DeliveryState.FAILED


def test_both_signatures_are_sent_while_a_rotation_overlaps(hooked: Hooked):
    from mailplane.webhooks.services import webhook_secret_rotate

    new = webhook_secret_rotate(endpoint=hooked.endpoint).secret
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    (got,) = hooked.receiver.accepted()
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(got.body, got.headers)
    Webhook(hooked.secret).verify(got.body, got.headers)  # the old one still verifies


def test_one_endpoints_backlog_does_not_hold_up_another(hooked: Hooked, receiver, settings):
    """A slow endpoint at its cap with a long backlog; another server's endpoint still gets
    its event at once (claims leave full endpoints out before choosing)."""
    from mailplane.webhooks.services import webhook_endpoint_create
    from tests.support.servers import server_make
    from tests.support.webhook_receiver import Receiver
    from tests.webhooks.conftest import send as send_on

    settings.MAILPLANE = {**settings.MAILPLANE, "WEBHOOKS_BATCH_SIZE": 2}
    WebhookEndpoint.objects.filter(pk=hooked.endpoint.pk).update(max_concurrency=1)
    hooked.receiver.script = lambda n, body: Answer(delay=0.1)
    for i in range(30):
        send(hooked, to=f"r{i}@dest.test")
    fast = Receiver()
    try:
        other = server_make(hooked.live.account, name="other")
        webhook_endpoint_create(server=other.server, url=fast.url(), event_types=["queued"])
        send_on(Hooked(other, hooked.endpoint, "", fast), to="x@dest.test")
        WebhookWorker().run_until_idle(timeout=20, until=lambda: bool(fast.accepted()))
        (got,) = fast.accepted()
        before = [r for r in hooked.receiver.received if r.at < got.at]
        assert len(before) < 5  # it did not wait for the backlog (30 requests of 0.1 s)
    finally:
        fast.close()
