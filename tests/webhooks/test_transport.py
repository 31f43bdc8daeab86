"""The runner's HTTP connections (webhooks/http1.py): kept alive and reused per
endpoint, never reused once the receiver has closed them, and each request still one
recorded attempt."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from mailplane.webhooks.http1 import Http1Client
from mailplane.webhooks.models import DeliveryState, WebhookAttempt, WebhookDelivery
from mailplane.webhooks.runner import WebhookWorker
from tests.support.webhook_receiver import Answer
from tests.webhooks.conftest import Hooked, send

pytestmark = pytest.mark.django_db


def test_one_endpoints_requests_share_a_kept_alive_connection(hooked: Hooked):
    hooked.endpoint.max_concurrency = 1  # one at a time: one connection serves them all
    hooked.endpoint.save(update_fields=["max_concurrency"])
    for i in range(12):
        send(hooked, to=f"r{i}@dest.test")
    WebhookWorker().run_until_idle(timeout=30)
    accepted = hooked.receiver.accepted()
    assert len(accepted) == 12
    assert len({r.peer for r in accepted}) == 1, "a new connection per request"


def test_a_connection_the_receiver_closed_is_not_reused(hooked: Hooked):
    # Every answer says `Connection: close` (RFC 9112 §9.6), and the server closes: a
    # request on that socket would fail; each must go out on a new one and succeed.
    hooked.receiver.script = lambda n, body: Answer(headers={"connection": "close"})
    for i in range(6):
        send(hooked, to=f"r{i}@dest.test")
    WebhookWorker().run_until_idle(timeout=30)
    accepted = hooked.receiver.accepted()
    assert len(accepted) == 6
    assert len({r.peer for r in accepted}) == 6
    assert not WebhookDelivery.objects.exclude(state=DeliveryState.DELIVERED).exists()
    assert WebhookAttempt.objects.filter(error="").count() == 6  # no failed attempt


def test_the_pool_drops_an_idle_connection_closed_by_the_server():
    """Closed while idle without a word (the receiver's keep-alive ran out, it restarted):
    the pool finds the socket readable at EOF and opens another instead of failing."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[tuple[str, int]] = []
    closed = threading.Event()

    def serve() -> None:
        for _ in range(2):
            conn, peer = listener.accept()
            accepted.append(peer)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            closed.set()  # closed after a keep-alive answer: the client is not told

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def run() -> list[int]:
        statuses = []
        async with Http1Client() as client:
            for _ in range(2):
                answer = await client.post(
                    key=("http", "127.0.0.1", port, "127.0.0.1"),
                    target="/hook",
                    headers=[("host", f"127.0.0.1:{port}")],
                    body=b"{}",
                    excerpt=100,
                )
                statuses.append(answer.status)
                assert answer.excerpt == b"ok"
                assert client.idle_count() == 1  # kept for the next request
                await asyncio.get_running_loop().run_in_executor(None, closed.wait, 10)
        return statuses

    try:
        assert asyncio.run(run()) == [200, 200]
    finally:
        listener.close()
        thread.join(10)
    assert len(accepted) == 2
