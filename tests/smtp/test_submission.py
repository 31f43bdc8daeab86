"""Submission over real sockets: smtplib (implicit TLS and STARTTLS) and swaks."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from mailplane.mailboxes import passwords
from mailplane.mailboxes.models import Mailbox
from mailplane.queue.models import MessageBody, OutboundMessage, QueuedRecipient
from tests.smtp.conftest import (
    PASSWORD,
    client_tls,
    maildir_files,
    make_mailbox,
    message,
    smtps,
    starttls,
)
from tests.support.fixtures import verified_domain
from tests.support.tools import requires_tool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def alice(account):
    domain = verified_domain(account, "acme.test")
    return make_mailbox(account, domain, "alice", reply_to="replies@acme.test")


@pytest.fixture
def bob(account, alice):
    return make_mailbox(account, alice.domain, "bob")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_implicit_tls_submission_queues_and_files_sent_copy(listeners, alice, bob):
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        refused = client.sendmail(
            alice.address,
            [bob.address, "someone@example.org"],
            message(alice.address, bob.address, subject="Queued"),
        )
        assert refused == {}
    stored = OutboundMessage.objects.get()
    assert (stored.mailbox_id, stored.mail_from, stored.source) == (alice.pk, alice.address, "smtp")
    assert sorted(QueuedRecipient.objects.values_list("rcpt_to", "status")) == [
        (bob.address, "queued"),
        ("someone@example.org", "queued"),
    ]
    raw = bytes(MessageBody.objects.get(message=stored).raw)
    # RFC 6409 §8: Date and Message-ID added; the mailbox's reply-to applied.
    assert b"\r\nDate: " in raw and b"\r\nMessage-ID: <" in raw
    assert b"Reply-To: replies@acme.test\r\n" in raw
    assert stored.message_id.endswith("@acme.test>")
    # Local recipients go through the queue: nothing delivered into bob's INBOX here.
    assert maildir_files(bob) == []
    sent = maildir_files(alice, "Sent")
    assert len(sent) == 1 and sent[0].read_bytes() == raw


def test_queue_id_in_reply_and_existing_headers_kept(listeners, alice):
    raw = (
        f"From: {alice.address}\r\nTo: x@example.org\r\nReply-To: mine@example.org\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <own@acme.test>\r\n"
        "Subject: Own headers\r\n\r\nBody\r\n"
    ).encode()
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        client.rcpt("x@example.org")
        code, reply = client.data(raw)
    stored = OutboundMessage.objects.get()
    assert code == 250 and reply.decode().endswith(f"queued as {stored.pk}")
    body = bytes(MessageBody.objects.get(message=stored).raw)
    assert body.count(b"Reply-To:") == 1 and body.count(b"Message-ID:") == 1
    assert body.endswith(raw)  # the client's bytes are kept as sent


def test_starttls_port_requires_tls_before_auth_and_mail(listeners, alice):
    with socket.create_connection((listeners.host, listeners.submission), timeout=10) as raw:
        client = raw.makefile("rwb")
        assert client.readline().startswith(b"220 ")
        client.write(b"EHLO client.test\r\n")
        client.flush()
        lines = []
        while not (line := client.readline()).startswith(b"250 "):
            lines.append(line)
        assert b"250-STARTTLS\r\n" in lines
        assert not any(b"AUTH" in line for line in lines)  # RFC 4954 §4: not before TLS
        for command in (
            f"AUTH PLAIN {_b64(chr(0) + alice.address + chr(0) + PASSWORD)}",
            f"MAIL FROM:<{alice.address}>",
        ):
            client.write(command.encode() + b"\r\n")
            client.flush()
            assert client.readline().startswith(b"530 ")
    with starttls(listeners) as client:
        assert client.has_extn("auth") and "PLAIN" in client.esmtp_features["auth"]
        client.login(alice.address, PASSWORD)
        client.sendmail(alice.address, ["a@example.org"], message(alice.address, "a@example.org"))
    assert OutboundMessage.objects.count() == 1


def test_auth_login_mechanism_and_mail_without_auth(listeners, alice):
    with smtps(listeners) as client:
        client.ehlo("client.test")
        code, _ = client.mail(alice.address)
        assert code == 530  # RFC 4954 §6: authentication required
        client.rset()
        assert client.docmd("AUTH", "LOGIN")[0] == 334
        assert client.docmd(_b64(alice.address))[0] == 334
        code, reply = client.docmd(_b64(PASSWORD))
        assert (code, reply[:5]) == (235, b"2.7.0")


def test_bad_base64_and_malformed_plain_get_501_and_session_goes_on(listeners, alice):
    with smtps(listeners) as client:
        client.ehlo("client.test")
        assert client.docmd("AUTH", "PLAIN !!!notbase64")[0] == 501
        assert client.docmd("AUTH", f"PLAIN {_b64('no-nul-separators')}")[0] == 501
        assert client.docmd("AUTH", "LOGIN")[0] == 334
        assert client.docmd("%%%")[0] == 501  # bad base64 in the challenge reply: one reply
        assert client.docmd("AUTH", "PLAIN")[0] == 334
        assert client.docmd("*")[0] == 501  # RFC 4954 §4: client cancelled
        assert client.noop()[0] == 250  # in sync: exactly one reply per command
        client.login(alice.address, PASSWORD)


def test_wrong_password_and_unknown_user_refused(listeners, alice):
    for user, password in ((alice.address, "Wrong-passw0rd!"), ("nobody@acme.test", PASSWORD)):
        with smtps(listeners) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                client.login(user, password)
            assert info.value.smtp_code == 535


def test_failed_logins_rate_limited_per_address_and_ip(listeners, alice, bob):
    plain = _b64("\0" + alice.address + "\0" + "Wrong-passw0rd!")
    with smtps(listeners) as client:
        client.ehlo("client.test")
        codes = [client.docmd("AUTH", f"PLAIN {plain}")[0] for _ in range(4)]
    assert codes == [535, 535, 535, 454]  # RFC 4954 §6: 454 4.7.0 temporary failure
    # Even the right password is refused for that address while it cools down...
    with smtps(listeners) as client:
        client.ehlo("client.test")
        good = _b64("\0" + alice.address + "\0" + PASSWORD)
        assert client.docmd("AUTH", f"PLAIN {good}")[0] == 454
        # ...but other users on the same IP are served.
        client.login(bob.address, PASSWORD)
    # Per-IP: 127.0.0.2 guesses across many addresses, then is blocked for everyone...
    with smtps(listeners, source="127.0.0.2") as client:
        client.ehlo("client.test")
        codes = []
        for n in range(7):
            guess = _b64(f"\0user{n}@acme.test\0Wrong-passw0rd!")
            codes.append(client.docmd("AUTH", f"PLAIN {guess}")[0])
        assert codes[-1] == 454 and codes[0] == 535
    # ...while 127.0.0.1 still logs in.
    with smtps(listeners) as client:
        client.login(bob.address, PASSWORD)


def test_cross_tenant_login_and_sender_refused(listeners, alice, other_account):
    other_domain = verified_domain(other_account, "intruder.test")
    mallory = make_mailbox(other_account, other_domain, "mallory", password="Mall0ry-pass-99!")
    with smtps(listeners) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(alice.address, "Mall0ry-pass-99!")
    with smtps(listeners) as client:
        client.login(mallory.address, "Mall0ry-pass-99!")
        code, reply = client.mail(alice.address)
        assert (code, reply[:5]) == (553, b"5.7.1")
    assert OutboundMessage.objects.count() == 0


def test_spoofed_envelope_or_header_sender_refused_nothing_stored(listeners, alice, bob):
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        assert client.mail("ceo@acme.test")[0] == 553
        assert client.mail("")[0] == 553  # null sender is not the mailbox either
        client.rset()
        client.mail(alice.address)
        client.rcpt("x@example.org")
        code, reply = client.data(message(bob.address, "x@example.org"))
        assert (code, reply[:5]) == (550, b"5.7.1")
        client.mail(alice.address)
        client.rcpt("x@example.org")
        code, _ = client.data(b"To: x@example.org\r\nSubject: no from\r\n\r\nhi\r\n")
        assert code == 550
        assert client.noop()[0] == 250
    assert OutboundMessage.objects.count() == 0
    assert maildir_files(alice, "Sent") == []


def test_recipient_limit_and_address_syntax(listeners, alice):
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        client.mail(alice.address)
        codes = [client.rcpt(f"r{n}@example.org")[0] for n in range(6)]
        assert codes == [250] * 5 + [452]  # RFC 5321 §4.5.3.1.10
        client.rset()
        client.mail(alice.address)
        assert client.rcpt("no-domain")[0] == 553
        assert client.rcpt("<broken")[0] in (501, 553)


def test_oversized_data_refused_and_nothing_stored(listeners, alice):
    big = message(alice.address, "x@example.org", body=("y" * 998 + "\r\n") * 250)
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        assert f"SIZE {200_000}" in client.ehlo_resp.decode() if client.ehlo_resp else True
        assert client.docmd("MAIL", f"FROM:<{alice.address}> SIZE=999999999")[0] == 552
        client.mail(alice.address)
        client.rcpt("x@example.org")
        code, _ = client.data(big)
        assert code == 552
        # The connection stays usable for a normal message.
        client.sendmail(alice.address, ["x@example.org"], message(alice.address, "x@example.org"))
    assert OutboundMessage.objects.count() == 1
    assert len(maildir_files(alice, "Sent")) == 1


def test_unknown_and_malformed_commands(listeners, alice):
    with smtps(listeners) as client:
        client.ehlo("client.test")
        assert client.docmd("FROBNICATE")[0] == 500
        assert client.docmd("MAIL", f"FROM:<{alice.address}>")[0] == 530
        client.login(alice.address, PASSWORD)
        assert client.docmd("MAIL", "TO:<x@y>")[0] == 501
        for path in ("FROM:a@", "FROM:<a@>", "FROM:<@>", 'FROM:<"x"@>'):
            code, reply = client.docmd("MAIL", path)
            assert (code, reply[:5]) == (553, b"5.1.3"), (path, reply)  # not 451/traceback
        client.rset()
        client.mail(alice.address)
        assert client.docmd("RCPT", "TO:x@")[0] == 553
        client.rset()
        assert client.docmd("RCPT", "TO:<x@example.org>")[0] == 503  # no MAIL yet
        assert client.docmd("DATA")[0] == 503
        assert client.docmd("EHLO")[0] == 501
        assert client.noop()[0] == 250
    # Too many unknown commands: the server says goodbye and closes (aiosmtpd: 502 5.5.1).
    with smtps(listeners) as client:
        client.ehlo("client.test")
        replies = [client.docmd(f"BOGUS{n}")[0] for n in range(5)]
        assert replies[-1] == 502


def _read_replies(sock: ssl.SSLSocket, count: int, deadline: float) -> list[bytes]:
    buf = b""
    while buf.count(b"\r\n") < count and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\r\n")[:count]


def test_pipelining_abuse_is_answered_in_order_and_others_are_served(listeners, alice):
    with socket.create_connection((listeners.host, listeners.smtps), timeout=10) as raw:
        sock = client_tls().wrap_socket(raw)
        # Everything at once, before even the greeting is read.
        burst = b"EHLO flood.test\r\n" + b"NOOP\r\n" * 300 + b"QUIT\r\n"
        sock.sendall(burst)
        # Meanwhile another client is served normally.
        with smtps(listeners) as other:
            other.login(alice.address, PASSWORD)
            other.sendmail(
                alice.address, ["x@example.org"], message(alice.address, "x@example.org")
            )
        lines = _read_replies(sock, 400, time.monotonic() + 20)
    noops = [line for line in lines if line.startswith(b"250 ") and b"OK" in line]
    assert len(noops) >= 300
    assert any(line.startswith(b"221") for line in lines)
    assert OutboundMessage.objects.count() == 1


def test_idle_connection_is_closed(listeners):
    with socket.create_connection((listeners.host, listeners.smtps), timeout=30) as raw:
        sock = client_tls().wrap_socket(raw)
        assert sock.recv(1024).startswith(b"220")
        start = time.monotonic()
        try:
            data = sock.recv(1024)  # blocks until the server's idle timeout closes it
        except (ConnectionError, ssl.SSLError):
            data = b""
        assert data == b"" and time.monotonic() - start < 20  # idle_timeout is 5 s


def test_suspended_mailbox_and_password_change_take_effect_at_once(listeners, alice):
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)  # now cached
    new_password = "N3w-password-ok!"
    Mailbox.objects.filter(pk=alice.pk).update(password_hash=passwords.password_hash(new_password))
    with smtps(listeners) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(alice.address, PASSWORD)
    with smtps(listeners) as client:
        client.login(alice.address, new_password)
    Mailbox.objects.filter(pk=alice.pk).update(status="suspended")
    with smtps(listeners) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login(alice.address, new_password)


def test_cached_logins_are_fast(listeners, alice):
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
    start = time.monotonic()
    for _ in range(20):
        with smtps(listeners) as client:
            client.login(alice.address, PASSWORD)
    # 20 scrypt checks alone would take ~1 s; cached logins are TLS + one indexed query.
    assert time.monotonic() - start < 3


@requires_tool("swaks")
@pytest.mark.parametrize("mode", ["--tls-on-connect", "--tls"])
def test_swaks_submits_over_both_ports(listeners, alice, mode):
    port = listeners.smtps if mode == "--tls-on-connect" else listeners.submission
    result = subprocess.run(
        [
            "swaks", "--server", listeners.host, "--port", str(port), mode,
            "--auth", "PLAIN", "--auth-user", alice.address, "--auth-password", PASSWORD,
            "--from", alice.address, "--to", "friend@example.org",
            "--header", "Subject: via swaks", "--body", "sent by swaks",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "queued as" in result.stdout
    stored = OutboundMessage.objects.get()
    assert stored.subject == "via swaks"
    assert PASSWORD not in result.stdout.split("AUTH", 1)[0]


@requires_tool("swaks")
def test_swaks_auth_refused_without_tls(listeners, alice):
    result = subprocess.run(
        [
            "swaks", "--server", listeners.host, "--port", str(listeners.submission),
            "--auth", "PLAIN", "--auth-user", alice.address, "--auth-password", PASSWORD,
            "--from", alice.address, "--to", "friend@example.org",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert OutboundMessage.objects.count() == 0
