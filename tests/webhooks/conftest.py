"""Webhook tests: a live server (acme.test verified), a local receiver on 127.0.0.2, an
endpoint of the server's pointing at it, and a retry schedule in tenths of a second."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from django.utils import timezone

from mailplane.queue.models import EventType, QueuedRecipient, RecipientStatus
from mailplane.queue.transitions import Transition, transitions_apply
from mailplane.sending.requests import send_request_parse
from mailplane.sending.services import message_send
from mailplane.webhooks.models import WebhookEndpoint, WebhookEventType
from mailplane.webhooks.services import webhook_endpoint_create
from tests.support.fixtures import Account, verified_domain
from tests.support.servers import ServerAccess, send_body, server_make
from tests.support.webhook_receiver import Receiver, receiver  # noqa: F401 (fixture)

FAST_SCHEDULE = "0.05,0.05,0.05,0.05,0.05,0.05,0.05,0.05"


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "WEBHOOKS_RETRY_SCHEDULE": FAST_SCHEDULE,
        "WEBHOOKS_TIMEOUT": 5.0,
        "WEBHOOKS_POLL_INTERVAL": 0.02,
        "WEBHOOKS_ALLOW_PRIVATE": True,
    }


@dataclass
class Hooked:
    live: ServerAccess
    endpoint: WebhookEndpoint
    secret: str
    receiver: Receiver


@pytest.fixture
def hooked(account: Account, receiver: Receiver) -> Hooked:  # noqa: F811
    verified_domain(account, "acme.test")
    live = server_make(account)
    issued = webhook_endpoint_create(
        server=live.server, url=receiver.url(), event_types=WebhookEventType.values
    )
    return Hooked(live, issued.endpoint, issued.secret, receiver)


def send(hooked: Hooked, **fields: object) -> list[QueuedRecipient]:
    sent = message_send(server=hooked.live.server, request=send_request_parse(send_body(**fields)))
    assert sent.message is not None
    return list(
        QueuedRecipient.objects.filter(message=sent.message)
        .select_related("message")
        .order_by("id")
    )


def step(
    row: QueuedRecipient,
    event: EventType,
    status: RecipientStatus | None,
    reply: str = "",
    now: datetime | None = None,
    bounce_class: str = "",
) -> None:
    """One state transition through the queue's one writer, as delivery would make it."""
    transitions_apply(
        [
            Transition(
                row=row,
                event=event,
                status=status,
                reply=reply,
                remote_host="mx.dest.test",
                bounce_class=bounce_class,
            )
        ],
        now=now or timezone.now(),
    )
