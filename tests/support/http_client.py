"""A raw HTTP/1.1 client for hostile tests: any body, any header, any source address.

urllib refuses or rewrites much of what a hostile client sends and cannot choose the
source address; http.client on a fresh connection per call does both, and each call has
a deadline (the socket timeout), so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def http_call(
    base: str,
    method: str,
    path: str,
    *,
    key: str | None = None,
    body: bytes | str | None = None,
    json_body: Any = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
    timeout: float = 15.0,
) -> Reply:
    """One request on its own connection from `source` (any 127.x.y.z); raises on timeout."""
    parts = urlsplit(base)
    sent: dict[str, str] = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Api-Key {key}"
    if json_body is not None:
        body = json.dumps(json_body)
        content_type = content_type or "application/json"
    if isinstance(body, str):
        body = body.encode()
    if content_type is not None:
        sent["Content-Type"] = content_type
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1",
        parts.port or 80,
        timeout=timeout,
        source_address=(source, 0),
    )
    started = time.monotonic()
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        data = response.read()
        return Reply(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            data,
            time.monotonic() - started,
        )
    finally:
        connection.close()


def http_send_large(
    base: str,
    method: str,
    path: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """Send a large body while reading the reply, as curl does: a server that answers
    413 before it has read the body (and then closes) is heard, not lost to a reset.

    Returns the status and the reply's bytes (headers and body).
    """
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: {parts.hostname}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    received = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with contextlib.suppress(OSError):  # the server may stop reading: that is allowed
            sock.sendall(head.encode())
            view = memoryview(body)
            for start in range(0, len(body), 65536):
                sock.sendall(view[start : start + 65536])
        reader.join(timeout)
        assert not reader.is_alive(), f"no complete reply within {timeout}s"
    finally:
        sock.close()
    status_line = bytes(received).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), bytes(received[:200])
    return int(status_line.split()[1]), bytes(received)
