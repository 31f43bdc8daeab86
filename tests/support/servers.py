"""Email servers and server-key clients for the send API's tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from rest_framework.test import APIClient

from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import EventType, QueuedRecipient, RecipientStatus
from mailplane.queue.transitions import Transition, transitions_apply
from mailplane.sending.requests import send_request_parse
from mailplane.sending.services import message_send
from mailplane.servers.models import EmailServer
from mailplane.servers.services import email_server_create, server_key_create
from tests.support.fixtures import Account


@dataclass
class ServerAccess:
    account: Account
    server: EmailServer
    key: str  # a send-only key
    full_key: str
    client: APIClient  # the send-only key, as `Authorization: Bearer`
    full_client: APIClient


def server_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def server_make(
    account: Account, name: str = "my-app-production", **kwargs: object
) -> ServerAccess:
    server = email_server_create(organization=account.org, name=name, **kwargs)  # type: ignore[arg-type]
    key = server_key_create(server=server, name="send", kind="send_only").secret
    full = server_key_create(server=server, name="admin", kind="full").secret
    return ServerAccess(account, server, key, full, server_client(key), server_client(full))


def send_body(**fields: object) -> dict[str, object]:
    """A valid send request; a field given as None is left out."""
    body: dict[str, object] = {
        "from": "Alice <alice@acme.test>",
        "to": "carol@dest.test",
        "subject": "Hello",
        "text": "Hi Carol.",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def queued_rows(server: EmailServer, **fields: object) -> list[QueuedRecipient]:
    """Send `send_body(**fields)` through `server` (the service, not HTTP); its queue rows,
    with their message loaded, in recipient order."""
    sent = message_send(server=server, request=send_request_parse(send_body(**fields)))
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


def sent_ids(client: APIClient, *to: str, **fields: object) -> list[int]:
    """One send API message per address (through `client`); their message ids."""
    ids = []
    for address in to:
        reply = client.post("/api/email/", send_body(to=address, **fields), format="json")
        assert reply.status_code == 200, reply.content
        ids.append(reply.json()["id"])
    return ids


def drain(worker: DeliveryWorker, now: datetime) -> None:
    """Run `worker` at `now` until a pass finds nothing to do (at most 100 passes)."""
    for _ in range(100):
        if worker.run_once(now=now) == 0:
            return
    raise AssertionError("the queue never settled")
