"""Analytics tests: a live server (acme.test verified), messages sent through the send
API's service, and every later step through the queue's one writer (queue/transitions.py),
as delivery would make it: no event is written by hand."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from mailplane.analytics.models import StatCounter
from mailplane.queue.models import QueuedRecipient
from mailplane.servers.models import EmailServer
from tests.support.fixtures import Account, verified_domain
from tests.support.servers import ServerAccess, queued_rows, server_make
from tests.support.servers import step as step  # re-exported for the tests here


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
    return queued_rows(live.server, **fields)


def totals(server: EmailServer, *, tag: str = "", stream: str | None = None) -> Counter[str]:
    """Every counter of the server summed per metric (for one tag, or all mail)."""
    rows = StatCounter.objects.filter(server=server, tag=tag)
    if stream is not None:
        rows = rows.filter(stream__stream_id=stream)
    found: Counter[str] = Counter()
    for metric, count in rows.values_list("metric", "count"):
        found[metric] += count
    return found
