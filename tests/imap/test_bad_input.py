"""Hostile and broken clients get the protocol's answer or a timeout; others keep working."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from mailplane.tls import client_context_insecure
from tests.imap.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)


class Raw:
    """A line-oriented TLS client speaking raw IMAP."""

    def __init__(self, host: str, port: int) -> None:
        sock = socket.create_connection((host, port), timeout=10)
        self.sock: ssl.SSLSocket = client_context_insecure().wrap_socket(sock)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return lines
            lines.append(line)
            if line.startswith(tag + b" ") or line.startswith(b"* BYE"):
                return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(imap_server):
    clients: list[Raw] = []

    def connect() -> Raw:
        client = Raw(imap_server.host, imap_server.tls_port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def test_unknown_command_is_bad_and_connection_continues(raw):
    c = raw()
    c.send(b"a1 FROBNICATE x\r\n")
    assert c.until(b"a1")[-1].startswith(b"a1 BAD")
    c.send(b"a2 NOOP\r\n")
    assert c.until(b"a2")[-1].startswith(b"a2 OK")


def test_commands_before_login_are_refused(raw):
    c = raw()
    for n, cmd in enumerate((b"SELECT INBOX", b'LIST "" *', b"FETCH 1 BODY[]")):
        tag = b"b%d" % n
        c.send(tag + b" " + cmd + b"\r\n")
        assert c.until(tag)[-1].split()[1] in (b"BAD", b"NO")


def test_oversized_synchronizing_literal_is_refused_without_reading_it(raw):
    c = raw()
    c.send(b"c1 LOGIN {999999999}\r\n")
    reply = c.until(b"c1")[-1]
    assert reply.startswith(b"c1 BAD") or reply.startswith(b"c1 NO")
    c.send(b"c2 NOOP\r\n")
    assert c.until(b"c2")[-1].startswith(b"c2 OK")


def test_oversized_non_synchronizing_literal_ends_the_connection(raw):
    c = raw()
    c.send(b"d1 LOGIN {999999999+}\r\n")  # RFC 7888: the bytes would follow unasked
    lines = c.until(b"d1")
    assert lines and lines[-1].startswith(b"* BYE") and b"TOOBIG" in lines[-1]


def test_literal_shorter_than_announced_times_out_with_bye(raw, imap_server, make_mailbox):
    mailbox = make_mailbox()
    c = raw()
    c.send(b"e1 LOGIN {40}\r\n")
    assert c.file.readline().startswith(b"+")
    c.send(b"short\r\n")  # 7 of the 40 promised bytes, then silence
    started = time.monotonic()
    lines = c.until(b"e1")
    assert lines and lines[-1].startswith(b"* BYE"), lines
    assert time.monotonic() - started < 10  # unauthenticated timeout is 3 s in tests
    # Meanwhile and afterwards, others are served.
    with imap_server.client() as imap:
        assert imap.login(mailbox.address, PASSWORD)[0] == "OK"


def test_idle_connection_before_login_is_closed_after_timeout(raw):
    c = raw()
    started = time.monotonic()
    line = c.file.readline()
    assert line.startswith(b"* BYE") and b"Autologout" in line
    assert 2 <= time.monotonic() - started < 10
    assert c.file.readline() == b""  # closed


def test_garbage_and_long_lines(raw, imap_server, make_mailbox):
    mailbox = make_mailbox()
    c = raw()
    c.send(b"\x00\xff\xfe garbage\r\n")
    assert b"BAD" in c.file.readline()
    long = raw()
    long.send(b"f1 NOOP " + b"x" * 100_000 + b"\r\n")
    lines = long.until(b"f1")
    assert not lines or lines[-1].startswith(b"* BYE") or lines[-1].startswith(b"f1 BAD")
    with imap_server.client() as imap:
        assert imap.login(mailbox.address, PASSWORD)[0] == "OK"
