"""The runner's HTTP connections (webhooks/http1.py): kept alive and reused per
endpoint, never reused once the receiver has closed them, and each request still one
recorded attempt."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mailplane.tls import self_signed_ensure, server_context
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


def _tls_receiver(tmp_path: Path) -> tuple[ThreadingHTTPServer, Path]:
    cert, key = self_signed_ensure(directory=tmp_path, hostnames=("hooks.test",))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = f"sni ok, host {self.headers['host']}".encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = server_context(cert=cert, key=key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, cert


def test_https_is_verified_against_the_urls_host_name(tmp_path: Path):
    """TLS to the pinned address, the certificate checked for the URL's host name (sent
    as SNI): a certificate for another name is refused, as a bad one would be."""
    server, cert = _tls_receiver(tmp_path)
    port = server.server_address[1]
    trusting = ssl.create_default_context(cafile=str(cert))

    async def post(name: str) -> bytes:
        async with Http1Client(tls_context=trusting) as client:
            answer = await client.post(
                key=("https", "127.0.0.1", port, name),
                target="/hook",
                headers=[("host", f"{name}:{port}")],
                body=b"{}",
                excerpt=100,
            )
            assert answer.status == 200
            return answer.excerpt

    try:
        assert asyncio.run(post("hooks.test")) == f"sni ok, host hooks.test:{port}".encode()
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(post("elsewhere.test"))
    finally:
        server.shutdown()
        server.server_close()
