"""Analytics tests: a live server (acme.test verified), messages sent through the send
API's service, and every later step through the queue's one writer (queue/transitions.py),
as delivery would make it: no event is written by hand."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from django.utils import timezone

from mailplane.analytics.models import StatCounter
from mailplane.queue.models import EventType, QueuedRecipient, RecipientStatus
from mailplane.queue.transitions import Transition, transitions_apply
from mailplane.sending.requests import send_request_parse
from mailplane.sending.services import message_send
from mailplane.servers.models import EmailServer
from tests.support.fixtures import Account, verified_domain
from tests.support.servers import ServerAccess, send_body, server_make


@dataclass
class Live:
    account: Account
    access: ServerAccess

    @property
    def server(self) -> EmailServer:
        return self.access.server


@pytest.fixture
def live(account: Account) -> Live:
    verified_domain(account, "acme.test")
    return Live(account, server_make(account))


def send(live: Live, **fields: object) -> list[QueuedRecipient]:
    sent = message_send(server=live.server, request=send_request_parse(send_body(**fields)))
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
    bounce_class: str = "",
) -> None:
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
        now=timezone.now(),
    )


def totals(server: EmailServer, *, tag: str = "", stream: str | None = None) -> Counter[str]:
    """Every counter of the server summed per metric (for one tag, or all mail)."""
    rows = StatCounter.objects.filter(server=server, tag=tag)
    if stream is not None:
        rows = rows.filter(stream__stream_id=stream)
    found: Counter[str] = Counter()
    for metric, count in rows.values_list("metric", "count"):
        found[metric] += count
    return found
