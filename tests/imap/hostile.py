"""A raw IMAP client over TLS for the hostile suite: every reply bounded, BYE is a failure."""

from __future__ import annotations

import socket
import ssl
import time

from mailplane.tls import client_context_insecure

# Seconds any one reply may take, however hostile the command. Generous for a loaded CI
# machine; the defects it guards against took minutes or never answered.
REPLY_BOUND = 15.0


class ByeReceived(AssertionError):
    """The server ended the connection: never acceptable in this suite."""


class HostileClient:
    """Sends whole command lines (bytes, any content) and reads up to the tagged reply."""

    def __init__(self, host: str, port: int, *, timeout: float = REPLY_BOUND) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock: ssl.SSLSocket = client_context_insecure().wrap_socket(sock)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()
        self._tags = 0
        self.slowest = 0.0

    def command(self, body: bytes) -> tuple[bytes, list[bytes]]:
        """(OK | NO | BAD, every line read); raises on BYE, a closed socket or a timeout."""
        self._tags += 1
        tag = b"h%d" % self._tags
        started = time.monotonic()
        self.sock.sendall(tag + b" " + body + b"\r\n")
        lines: list[bytes] = []
        while True:
            try:
                line = self.file.readline()
            except TimeoutError:
                raise TimeoutError(f"no reply within the bound to {body[:120]!r}") from None
            if not line:
                raise ConnectionError(f"closed after {body[:120]!r}: {lines[-3:]}")
            lines.append(line)
            if line.startswith(b"* BYE"):
                raise ByeReceived(f"{line!r} after {body[:120]!r}")
            if line.startswith(tag + b" "):
                self.slowest = max(self.slowest, time.monotonic() - started)
                return line.split(b" ", 2)[1], lines

    def ok(self, body: bytes) -> list[bytes]:
        status, lines = self.command(body)
        assert status == b"OK", (body, lines[-1])
        return lines

    def login(self, address: str, password: str) -> None:
        self.ok(b'LOGIN "%s" "%s"' % (address.encode(), password.encode()))

    def close(self) -> None:
        self.sock.close()
