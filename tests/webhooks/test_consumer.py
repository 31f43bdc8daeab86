"""The consumer of the event stream: one delivery per (event, subscribed endpoint), the
cursor moved in the same transaction, nothing missed, nothing invented."""

from __future__ import annotations

import json

import pytest
from django.db import transaction

from mailplane.queue.events import events_last_seq
from mailplane.queue.models import EventType, RecipientStatus
from mailplane.webhooks import consumer
from mailplane.webhooks.consumer import cursor_position, events_consume
from mailplane.webhooks.models import WebhookDelivery, WebhookEndpoint
from mailplane.webhooks.services import webhook_endpoint_create
from tests.support.servers import server_make
from tests.webhooks.conftest import Hooked, send, step


def test_each_event_becomes_one_delivery_per_subscribed_endpoint(hooked: Hooked, receiver):
    only_bounces = webhook_endpoint_create(
        server=hooked.live.server, url=receiver.url("/bounces"), event_types=["bounced"]
    ).endpoint
    carol, dave = send(hooked, to=["carol@dest.test", "dave@dest.test"], metadata={"k": "v"})
    step(dave, EventType.BOUNCED, RecipientStatus.BOUNCED, "550 5.1.1 unknown", bounce_class="hard")
    step(carol, EventType.FAILED, RecipientStatus.FAILED, "no route")
    assert events_consume() == 4
    assert events_consume() == 0  # caught up: nothing twice
    assert cursor_position() == events_last_seq()
    every = list(WebhookDelivery.objects.filter(endpoint=hooked.endpoint).order_by("event_seq"))
    assert [d.type for d in every] == ["queued", "queued", "bounced", "rejected"]
    assert len({d.webhook_id for d in every}) == 4
    (bounce,) = WebhookDelivery.objects.filter(endpoint=only_bounces)
    body = json.loads(bounce.body)
    assert body["data"]["recipient"] == "dave@dest.test"
    assert body["data"]["metadata"] == {"k": "v"}
    assert body["data"]["bounce_class"] == "hard"
    assert body["type"] == "bounced"


def test_other_servers_and_disabled_endpoints_get_nothing(hooked: Hooked, receiver):
    other = server_make(hooked.live.account, name="other-server")
    webhook_endpoint_create(server=other.server, url=receiver.url(), event_types=["queued"])
    WebhookEndpoint.objects.filter(pk=hooked.endpoint.pk).update(enabled=False)
    send(hooked)
    events_consume()
    assert not WebhookDelivery.objects.exists()
    assert cursor_position() == events_last_seq()  # read, and nothing to deliver


def test_a_failed_consume_moves_no_cursor_and_writes_no_delivery(hooked: Hooked, monkeypatch):
    send(hooked)
    before = cursor_position()

    def broken(events):
        raise RuntimeError("database went away mid-batch")

    monkeypatch.setattr(consumer, "_deliveries_for", broken)
    with pytest.raises(RuntimeError):
        events_consume()
    assert cursor_position() == before
    monkeypatch.undo()
    assert events_consume() == 1
    assert WebhookDelivery.objects.count() == 1


def test_the_delivery_and_the_cursor_commit_together(hooked: Hooked):
    """Rolled back with the caller's transaction: both, or neither."""
    send(hooked)
    with pytest.raises(RuntimeError), transaction.atomic():
        events_consume()
        assert WebhookDelivery.objects.count() == 1
        raise RuntimeError("rollback")
    assert (WebhookDelivery.objects.count(), cursor_position()) == (0, 0)
    events_consume()
    assert WebhookDelivery.objects.count() == 1


def test_events_before_the_endpoint_existed_are_not_sent(hooked: Hooked, receiver):
    """Even when the consumer reads them only after the endpoint was made."""
    send(hooked)
    late = webhook_endpoint_create(
        server=hooked.live.server, url=receiver.url("/late"), event_types=["queued"]
    ).endpoint
    events_consume()
    assert not WebhookDelivery.objects.filter(endpoint=late).exists()
    assert WebhookDelivery.objects.filter(endpoint=hooked.endpoint).count() == 1
