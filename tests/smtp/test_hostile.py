"""Hostile SMTP clients against submission and MX, over real sockets (issue 8).

Bare LF and SMTP smuggling (defect 7), NUL bytes, over-long lines, STARTTLS abuse, broken
TLS handshakes, floods of recipients and errors: each gets a reply with an enhanced status
code (RFC 3463) or a clean disconnect, within the socket timeout, and nothing is stored
that should not be. No traceback is logged (`quiet_logs`).
"""

from __future__ import annotations

import base64
import re
import socket
import ssl

import pytest

from mailplane.queue.models import OutboundMessage
from tests.smtp.conftest import PASSWORD, Listeners, client_tls, maildir_files

pytestmark = pytest.mark.timeout(60)

BARE_LF = b"521 5.5.2 Error: bare <LF> received"
ENHANCED = re.compile(rb"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


class Raw:
    """A line-level SMTP client: sends exactly the bytes given, reads replies as sent."""

    def __init__(
        self, listeners: Listeners, port: int, *, tls: bool = False, source: str = "127.0.0.1"
    ) -> None:
        self.host = listeners.host
        self.sock: socket.socket = socket.create_connection((self.host, port), 10, (source, 0))
        if tls:
            self.sock = client_tls().wrap_socket(self.sock, server_hostname=self.host)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes | None:
        """One reply line, or None once the server has closed the connection."""
        while b"\r\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = self.line()
            assert line is not None, f"closed after {lines!r}"
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def cmd(self, line: bytes) -> list[bytes]:
        self.send(line + b"\r\n")
        return self.reply()

    def code(self, line: bytes) -> bytes:
        """The last line of the reply to `line` (code, enhanced code, text)."""
        return self.cmd(line)[-1]

    def closed(self) -> bool:
        """True if the server closes the connection (within the socket timeout)."""
        return self.line() is None

    def starttls(self) -> None:
        assert self.code(b"STARTTLS").startswith(b"220 2.0.0")
        self.sock = client_tls().wrap_socket(self.sock, server_hostname=self.host)

    def login(self, address: str) -> None:
        plain = base64.b64encode(f"\0{address}\0{PASSWORD}".encode())
        assert self.code(b"AUTH PLAIN " + plain).startswith(b"235 2.7.0")

    def close(self) -> None:
        self.sock.close()


def _mx(listeners: Listeners) -> Raw:
    client = Raw(listeners, listeners.mx)
    client.cmd(b"EHLO mail.sender.test")
    return client


def _submission(listeners: Listeners, alice) -> Raw:
    client = Raw(listeners, listeners.smtps, tls=True)
    client.cmd(b"EHLO client.test")
    client.login(alice.address)
    return client


def _open(listeners: Listeners, alice, target: str) -> Raw:
    return _mx(listeners) if target == "mx" else _submission(listeners, alice)


def _stored(alice, target: str) -> int:
    if target == "mx":
        return len(maildir_files(alice))
    return OutboundMessage.objects.count()


TARGETS = ["mx", "submission"]


# --- defect 7: bare LF ----------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "payload",
    [
        b"MAIL FROM:<a@plain.test>\nRCPT TO:<alice@acme.test>\r\n",  # ran as two commands
        b"NOOP\n",
        b"RSET\r\nNOOP\n",
    ],
)
def test_bare_lf_in_a_command_ends_the_session(
    listeners, alice, dns_server, quiet_logs, target, payload
):
    client = _open(listeners, alice, target)
    client.send(payload)
    lines = []
    while (line := client.line()) is not None:
        lines.append(line)
    assert lines[-1:] == [BARE_LF]  # Postfix's reply (smtpd_forbid_bare_newline = yes)
    assert not [line for line in lines if line.startswith(b"250 2.1")]  # no MAIL ran
    client.close()


SMUGGLED_ENDS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\n", b"\r\n.\r\r\n.\n"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("end", SMUGGLED_ENDS, ids=repr)
def test_smuggling_payloads_never_create_a_message(
    listeners, alice, dns_server, quiet_logs, target, end
):
    """CVE-2023-51764 class: a false end of data, then a second transaction inside the
    first one's text. Here neither is stored: the bare LF ends the session first."""
    sender = alice.address if target == "submission" else "a@plain.test"
    headers = f"From: <{sender}>\r\nTo: <{alice.address}>\r\n".encode()
    body = (
        headers
        + b"Subject: outer\r\n\r\nouter"
        + end
        + f"MAIL FROM:<{sender}>\r\nRCPT TO:<{alice.address}>\r\nDATA\r\n".encode()
        + headers
        + b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
    )
    client = _open(listeners, alice, target)
    assert client.code(f"MAIL FROM:<{sender}>".encode()).startswith(b"250 2.1.0")
    assert client.code(f"RCPT TO:<{alice.address}>".encode()).startswith(b"250 2.1.5")
    assert client.code(b"DATA").startswith(b"354")
    client.send(body)
    assert client.line() == BARE_LF
    assert client.closed()
    client.close()
    assert _stored(alice, target) == 0


@pytest.mark.parametrize("target", TARGETS)
def test_lines_split_between_cr_and_lf_are_not_bare(listeners, alice, dns_server, target):
    client = _open(listeners, alice, target)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.send(b"NOOP\r")
    client.send(b"\nNOOP\r\n")
    assert client.reply() == [b"250 2.0.0 OK"] and client.reply() == [b"250 2.0.0 OK"]
    client.close()


# --- replies ---------------------------------------------------------------------------

BATTERY = [
    b"NOOP",
    b"HELP",
    b"HELP MAIL",
    b"HELP FROBNICATE",
    b"VRFY",
    b"VRFY <someone@acme.test>",
    b"VRFY not an address",
    b"EXPN staff",
    b"FROBNICATE",
    b"MAIL TO:<a@plain.test>",
    b"MAIL FROM:<a@plain.test> FROBNICATE=1",
    b"RCPT TO:<a@plain.test>",
    b"DATA",
    b"STARTTLS now",
    b"AUTH",
    b"RSET",
    b"QUIT",
]


@pytest.mark.parametrize("port", ["mx", "smtps", "submission"])
def test_every_reply_carries_an_enhanced_status_code(
    listeners, alice, dns_server, quiet_logs, port
):
    """RFC 3463 / RFC 2034 §3: every 2xx, 4xx and 5xx reply but the greeting and the
    EHLO/HELO replies. On 587 before STARTTLS almost everything is 530 5.7.0."""
    client = Raw(listeners, getattr(listeners, port), tls=port == "smtps")
    client.cmd(b"EHLO client.test")
    if port == "smtps":
        client.login(alice.address)
    replies = {command: client.cmd(command) for command in BATTERY}
    for command, lines in replies.items():
        for line in lines:
            assert ENHANCED.match(line), (command, line)
    assert client.closed()  # after QUIT
    client.close()


@pytest.mark.parametrize("target", TARGETS)
def test_nul_bytes_are_refused(listeners, alice, dns_server, quiet_logs, target):
    sender = alice.address if target == "submission" else "a@plain.test"
    client = _open(listeners, alice, target)
    reply = client.code(b"MAIL FROM:<a\x00b@plain.test>")
    assert reply.startswith(b"500 5.5.2")
    reply = client.code(b"NO\x00OP")
    assert reply.startswith(b"500 5.5.1") and b"\x00" not in reply  # not echoed
    assert client.code(f"MAIL FROM:<{sender}>".encode()).startswith(b"250")
    assert client.code(f"RCPT TO:<{alice.address}>".encode()).startswith(b"250")
    assert client.code(b"DATA").startswith(b"354")
    client.send(f"From: <{sender}>\r\nSubject: nul\r\n\r\nA\x00B\r\n.\r\n".encode())
    assert client.reply()[-1].startswith(b"554 5.6.0")
    assert client.code(b"NOOP") == b"250 2.0.0 OK"  # the session goes on
    client.close()
    assert _stored(alice, target) == 0


@pytest.mark.parametrize("message_id", [b"<", b"<x@", b"", b"not-an-id", b"<a@b> junk"])
def test_a_malformed_message_id_is_queued_as_written(
    listeners, alice, dns_server, quiet_logs, message_id
):
    """The header registry's msg-id parse raised on `<` (IndexError): the message was
    refused with a 4xx, and in a group commit so were the others committed with it."""
    client = _open(listeners, alice, "submission")
    assert client.code(f"MAIL FROM:<{alice.address}>".encode()).startswith(b"250")
    assert client.code(b"RCPT TO:<carol@far.test>").startswith(b"250")
    assert client.code(b"DATA").startswith(b"354")
    client.send(
        f"From: <{alice.address}>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n".encode()
        + b"Message-ID: " + message_id + b"\r\n\r\nHello.\r\n.\r\n"
    )  # fmt: skip
    assert client.reply()[-1].startswith(b"250 2.0.0")
    client.close()
    [stored] = OutboundMessage.objects.all()
    assert (stored.message_id, stored.subject) == (message_id.decode(), "café")


@pytest.mark.parametrize("target", TARGETS)
def test_bare_cr_is_refused(listeners, alice, dns_server, quiet_logs, target):
    """A bare CR would become a line end at the next hop (aiosmtplib and smtplib rewrite
    it): the message delivered would not be the one checked and signed here."""
    sender = alice.address if target == "submission" else "a@plain.test"
    client = _open(listeners, alice, target)
    assert client.code(f"MAIL FROM:<{sender}>\rRCPT TO:<b@plain.test>".encode()).startswith(
        b"500 5.5.2"
    )
    assert client.code(f"MAIL FROM:<{sender}>".encode()).startswith(b"250")
    assert client.code(f"RCPT TO:<{alice.address}>".encode()).startswith(b"250")
    assert client.code(b"DATA").startswith(b"354")
    client.send(f"From: <{sender}>\r\nSubject: cr\r\n\r\nA\r.\rB\r\n.\r\n".encode())
    assert client.reply()[-1].startswith(b"554 5.6.0")
    assert client.code(b"NOOP") == b"250 2.0.0 OK"  # the session goes on
    client.close()
    assert _stored(alice, target) == 0


@pytest.mark.parametrize("target", TARGETS)
def test_over_long_lines_are_refused_and_the_session_goes_on(
    listeners, alice, dns_server, quiet_logs, target
):
    """RFC 5321 §4.5.3.1.4 (512-octet command lines), §4.5.3.1.6 (1000-octet text lines),
    §4.5.3.1.10 (500 Line too long)."""
    sender = alice.address if target == "submission" else "a@plain.test"
    client = _open(listeners, alice, target)
    assert client.code(b"NOOP " + b"a" * 600).startswith(b"500 5.5.2")
    assert client.code(b"NOOP " + b"a" * 50_000).startswith(b"500 5.5.2")  # past the buffer
    assert client.code(b"NOOP") == b"250 2.0.0 OK"
    assert client.code(f"MAIL FROM:<{sender}>".encode()).startswith(b"250")
    assert client.code(f"RCPT TO:<{alice.address}>".encode()).startswith(b"250")
    assert client.code(b"DATA").startswith(b"354")
    client.send(f"From: <{sender}>\r\n\r\n".encode() + b"x" * 5000 + b"\r\n.\r\n")
    assert client.reply()[-1].startswith(b"500 5.5.2")
    assert client.code(b"NOOP") == b"250 2.0.0 OK"
    client.close()
    assert _stored(alice, target) == 0


def test_over_long_auth_response_gets_500_5_5_6(listeners, alice, quiet_logs):
    """RFC 4954 §4: "500 5.5.6 Authentication Exchange line is too long"."""
    client = Raw(listeners, listeners.smtps, tls=True)
    client.cmd(b"EHLO client.test")
    assert client.code(b"AUTH LOGIN").startswith(b"334")
    assert client.code(b"A" * 5000).startswith(b"500 5.5.6")
    assert client.code(b"AUTH LOGIN").startswith(b"334")
    assert client.code(b"A" * 1100 + b"==").startswith(b"500 5.5.6")
    assert client.code(b"NOOP") == b"250 2.0.0 OK"  # in step: one reply per line
    client.login(alice.address)
    client.close()


# --- TLS -------------------------------------------------------------------------------


def test_starttls_only_once_and_never_after_auth(listeners, alice, dns_server, quiet_logs):
    """RFC 3207 §4.2: no STARTTLS once TLS is active (Postfix: 554 5.5.1)."""
    client = Raw(listeners, listeners.submission)
    client.cmd(b"EHLO client.test")
    client.starttls()
    assert b"STARTTLS" not in b"".join(client.cmd(b"EHLO client.test"))
    assert client.code(b"STARTTLS") == b"554 5.5.1 Error: TLS already active"
    client.login(alice.address)
    assert client.code(b"STARTTLS").startswith(b"554 5.5.1")
    assert client.code(b"NOOP") == b"250 2.0.0 OK"
    client.close()
    implicit = Raw(listeners, listeners.smtps, tls=True)
    implicit.cmd(b"EHLO client.test")
    assert implicit.code(b"STARTTLS").startswith(b"554 5.5.1")
    implicit.close()
    mx = _mx(listeners)
    mx.starttls()
    mx.cmd(b"EHLO mail.sender.test")
    assert mx.code(b"STARTTLS").startswith(b"554 5.5.1")
    mx.close()


@pytest.mark.parametrize("port", ["submission", "mx"])
def test_commands_pipelined_after_starttls_are_discarded(listeners, dns_server, port):
    """RFC 3207 §4.2 / CVE-2011-0411: plaintext sent after STARTTLS is not run under TLS."""
    client = Raw(listeners, getattr(listeners, port))
    client.cmd(b"EHLO client.test")
    client.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<a@plain.test>\r\n")
    assert client.reply()[-1].startswith(b"220 2.0.0")
    client.sock = client_tls().wrap_socket(client.sock, server_hostname=client.host)
    assert client.code(b"NOOP") == b"250 2.0.0 OK"  # the first reply under TLS is ours
    assert client.code(b"MAIL FROM:<>").startswith(b"503")  # EHLO again first (§4.2)
    client.close()


@pytest.mark.parametrize(
    "port, garbage",
    [
        ("submission", b"this is not a TLS client hello\r\n"),
        ("mx", b"\x16\x03\x01\x00\x05hello"),
        ("submission", b""),  # the client gives up before the handshake
        ("smtps", b"EHLO plaintext.on.465\r\n"),
    ],
)
def test_failed_tls_handshakes_are_quiet(listeners, dns_server, quiet_logs, port, garbage):
    """On main a STARTTLS handshake that failed was logged as a traceback."""
    if port == "smtps":
        sock = socket.create_connection((listeners.host, listeners.smtps), 10)
    else:
        client = Raw(listeners, getattr(listeners, port))
        client.cmd(b"EHLO client.test")
        assert client.code(b"STARTTLS").startswith(b"220")
        sock = client.sock
    sock.sendall(garbage)
    sock.shutdown(socket.SHUT_WR)
    while True:  # the server hangs up (bounded by the socket timeout)
        try:
            if not sock.recv(4096):
                break
        except ConnectionResetError:
            break
    sock.close()
    # The listener is fine: the next client is served.
    client = Raw(listeners, listeners.mx)
    assert client.code(b"NOOP").startswith(b"250")
    client.close()


# --- floods ----------------------------------------------------------------------------


def test_recipient_flood_is_bounded_and_not_an_error(listeners, alice, dns_server, quiet_logs):
    client = _mx(listeners)
    client.send(b"MAIL FROM:<a@plain.test>\r\n" + b"RCPT TO:<alice@acme.test>\r\n" * 300)
    replies = [client.reply()[-1][:9] for _ in range(301)]
    assert replies[0] == b"250 2.1.0"
    assert replies[1:] == [b"250 2.1.5"] * 5 + [b"452 4.5.3"] * 295  # RFC 5321 §4.5.3.1.10
    assert client.code(b"NOOP") == b"250 2.0.0 OK"  # 452s are not errors (Postfix's overshoot)
    client.close()


@pytest.mark.parametrize("target", TARGETS)
def test_too_many_errors_end_the_session(listeners, alice, dns_server, quiet_logs, target):
    """Postfix's smtpd_hard_error_limit (20): then 421 4.7.0 and the connection closes."""
    client = _open(listeners, alice, target)
    client.send(b"MAIL TO:<nobody>\r\n" * 100)
    lines = []
    while (line := client.line()) is not None:
        lines.append(line)
    assert len(lines) == 21 and lines[-1] == b"421 4.7.0 Error: too many errors"
    client.close()
