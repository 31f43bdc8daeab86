"""The event stream (queue/events.py) turned into webhook deliveries, under our own cursor.

One transaction reads the events after the cursor, writes one delivery row per
subscribed endpoint and moves the cursor past them: a crash before the commit leaves
neither (the events are read again), after it both. So no event is missed (the stream
is gap-free and ordered) and none is delivered twice by the consumer (the cursor and the
rows commit together; `one_delivery_per_event` holds it in the schema too).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from mailplane.queue.events import cursor_position as events_cursor_position
from mailplane.queue.events import events_consume_step
from mailplane.queue.models import DeliveryEvent, EventType, QueuedRecipient
from mailplane.servers.models import ServerMessage
from mailplane.webhooks.models import (
    WebhookCursor,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
)

CURSOR = "webhooks"
# The queue's name for an event -> the webhook's (failed: could not be attempted at all).
TYPES: dict[str, WebhookEventType] = {
    EventType.FAILED.value: WebhookEventType.REJECTED,
    **{t.value: t for t in WebhookEventType},
}


def webhook_id_new() -> str:
    """`msg_` + 24 random characters, as Svix ids look; the same across retries."""
    return "msg_" + secrets.token_urlsafe(18)


def _timestamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def payload_body(
    *, event: DeliveryEvent, kind: str, link: ServerMessage, rcpt_to: str | None
) -> str:
    """`{type, timestamp, data}`: the message, its recipient, stream, tags, metadata and
    the remote reply. Compact JSON, serialised once: the stored body is what is signed."""
    message = event.message
    data: dict[str, Any] = {
        "event_id": event.seq,
        "message_id": event.message_id,
        "message_id_header": message.message_id,
        "server_id": link.server_id,
        "stream": link.stream.stream_id,
        "recipient": rcpt_to,
        "from": message.mail_from,
        "tags": link.tags,
        "metadata": link.metadata,
        "sandbox": link.sandbox,  # a sandbox server's message: recorded, never sent
        "remote_reply": event.remote_reply,
        "remote_host": event.remote_host,
        "detail": event.detail,
    }
    if kind in (WebhookEventType.BOUNCED, WebhookEventType.DEFERRED):
        # The queue's class of the failure (delivery/bounce_classes.py): hard, soft,
        # mailbox_full, rate_limit, block, spam, policy; null when none was recorded.
        data["bounce_class"] = event.bounce_class or None
    body = {"type": kind, "timestamp": _timestamp(event.created_at), "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def cursor_position() -> int:
    return events_cursor_position(WebhookCursor, CURSOR)


def events_consume(*, limit: int = 1000) -> int:
    """Read up to `limit` events past the cursor into deliveries; returns how many events
    were read (0: caught up)."""
    return events_consume_step(WebhookCursor, CURSOR, _deliver_batch, limit=limit)


def _deliver_batch(events: list[DeliveryEvent]) -> None:
    WebhookDelivery.objects.bulk_create(_deliveries_for(events), batch_size=500)


def _deliveries_for(events: list[DeliveryEvent]) -> list[WebhookDelivery]:
    message_ids = {e.message_id for e in events}
    links = {
        link.message_id: link
        for link in ServerMessage.objects.filter(message_id__in=message_ids).select_related(
            "stream", "message"
        )
    }
    if not links:
        return []
    endpoints: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(
        server_id__in={link.server_id for link in links.values()}, enabled=True
    ):
        endpoints.setdefault(endpoint.server_id, []).append(endpoint)
    recipient_ids = {e.recipient_id for e in events if e.recipient_id is not None}
    rcpt = dict(QueuedRecipient.objects.filter(pk__in=recipient_ids).values_list("pk", "rcpt_to"))
    deliveries = []
    for event in events:
        link = links.get(event.message_id)
        kind = TYPES.get(event.type)
        if link is None or kind is None:
            continue  # not sent through a server (SMTP mailboxes, DSNs): no endpoints
        event.message = link.message
        subscribed = [
            e
            for e in endpoints.get(link.server_id, [])
            if kind in e.event_types and e.created_at <= event.created_at
        ]
        if not subscribed:
            continue
        body = payload_body(
            event=event, kind=kind, link=link, rcpt_to=rcpt.get(event.recipient_id or 0)
        )
        for endpoint in subscribed:
            deliveries.append(
                WebhookDelivery(
                    webhook_id=webhook_id_new(),
                    endpoint=endpoint,
                    organization_id=event.organization_id,
                    message_id=event.message_id,
                    event_seq=event.seq,
                    type=kind,
                    body=body,
                    event_at=event.created_at,
                    next_attempt_at=event.created_at,
                )
            )
    return deliveries
