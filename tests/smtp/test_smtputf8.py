"""Internationalised mail (RFC 6531 SMTPUTF8, RFC 6532 UTF-8 headers) on submission and the MX,
over real sockets: smtplib, raw command lines, and swaks when it is installed."""

from __future__ import annotations

import smtplib
import subprocess

import pytest

from mailplane.queue.models import MessageBody, OutboundMessage, QueuedRecipient
from mailplane.smtp.protocol import address_refusal
from tests.smtp.conftest import PASSWORD, maildir_files, make_mailbox, smtps, starttls
from tests.smtp.test_mx import mx_client
from tests.support.fixtures import verified_domain
from tests.support.tools import requires_tool

pytestmark = pytest.mark.timeout(60)

JOSE = "josé@exämple.test"
UTF8_HEADERS = (
    "Subject: Grüße aus Köln, 東京 😀\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Schöne Grüße.\r\n"
)


@pytest.fixture
def carol(account):
    return make_mailbox(account, verified_domain(account, "acme.test"), "carol")


def utf8_message(sender: str, to: str) -> bytes:
    return (f"From: Ålice Ünïcode <{sender}>\r\nTo: José <{to}>\r\n" + UTF8_HEADERS).encode()


def command(client: smtplib.SMTP, line: bytes) -> tuple[int, bytes]:
    """Send one raw command line (any bytes) and read the reply."""
    client.send(line + b"\r\n")
    return client.getreply()


# --- the check itself -------------------------------------------------------------------


def test_address_refusal_follows_rfc_6531_section_3_5():
    assert address_refusal("MAIL", "alice@acme.test", smtputf8=False) is None
    assert address_refusal("RCPT", JOSE, smtputf8=True) is None
    assert address_refusal("MAIL", JOSE, smtputf8=False).startswith("550 5.6.7 ")
    assert address_refusal("RCPT", JOSE, smtputf8=False).startswith("553 5.6.7 ")
    not_utf8 = b"jos\xe9@example.test".decode("utf-8", "surrogateescape")
    assert address_refusal("RCPT", not_utf8, smtputf8=True).startswith("553 5.1.3 ")


# --- submission ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["implicit", "starttls"])
def test_submission_queues_utf8_recipient_and_headers_byte_for_byte(listeners, alice, port):
    raw = utf8_message(alice.address, JOSE)
    client = smtps(listeners) if port == "implicit" else starttls(listeners)
    with client:
        client.ehlo("client.test")
        assert client.has_extn("smtputf8")
        client.login(alice.address, PASSWORD)
        refused = client.sendmail(alice.address, [JOSE, "bob@example.org"], raw, ["SMTPUTF8"])
        assert refused == {}
    stored = OutboundMessage.objects.get()
    assert stored.subject == "Grüße aus Köln, 東京 😀"
    # The domain as given (U-label); delivery asks the DNS for its A-label.
    assert sorted(QueuedRecipient.objects.values_list("rcpt_to", "rcpt_domain")) == [
        ("bob@example.org", "example.org"),
        (JOSE, "exämple.test"),
    ]
    body = bytes(MessageBody.objects.get(message=stored).raw)
    assert body.endswith(raw)  # the client's header fields and body untouched
    assert " with UTF8SMTPSA; " in body.split(b"\r\n", 1)[0].decode()
    assert maildir_files(alice, "Sent")[0].read_bytes() == body


def test_submission_without_smtputf8_is_told_why(listeners, alice):
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        client.command_encoding = "utf-8"  # smtplib sends ASCII unless told otherwise
        # RFC 6531 §3.5: 553 5.6.7 for RCPT, 550 5.6.7 for MAIL; never a 500.
        assert client.mail(alice.address)[0] == 250
        code, reply = client.rcpt(JOSE)
        assert (code, reply[:6]) == (553, b"5.6.7 ") and b"SMTPUTF8" in reply
        assert reply.isascii()
        client.rset()
        client.command_encoding = "utf-8"  # rset() sets it back to ASCII
        code, reply = client.mail("alicé@acme.test")
        assert (code, reply[:6]) == (550, b"5.6.7 ")
        # With the parameter the address is fine as UTF-8, and refused as not the mailbox.
        code, reply = client.mail("alicé@acme.test", ["SMTPUTF8"])
        assert (code, reply[:6]) == (553, b"5.7.1 ") and reply.isascii()
        assert client.noop()[0] == 250  # the session goes on
    assert not OutboundMessage.objects.exists()


def test_submission_refuses_bytes_that_are_not_utf8_and_bad_idna(listeners, alice):
    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        assert command(client, f"MAIL FROM:<{alice.address}> SMTPUTF8".encode())[0] == 250
        code, reply = command(client, b"RCPT TO:<jos\xe9@example.test>")
        assert (code, reply[:6]) == (553, b"5.1.3 ")
        code, reply = command(client, f"RCPT TO:<x@{'x' * 70}é.test>".encode())
        assert (code, reply[:6]) == (553, b"5.1.2 ")
        code, reply = command(client, b"VRFY <@\xff>")  # echoed: sent as "?", not raised
        assert (code, reply) == (502, b"5.5.4 Could not VRFY <@?>")
        assert client.noop()[0] == 250
        assert command(client, f"RCPT TO:<{JOSE}>".encode())[0] == 250


@requires_tool("swaks")
def test_swaks_utf8_headers_pass_and_utf8_recipient_needs_smtputf8(listeners, alice):
    # swaks (20201014) has no SMTPUTF8 option: it sends UTF-8 header fields in an ASCII
    # envelope, and a UTF-8 recipient without the parameter, which is refused with 5.6.7.
    def swaks(to: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "swaks", "--protocol", "ESMTP", "--server", listeners.host,
                "--port", str(listeners.submission), "--tls",
                "--auth", "PLAIN", "--auth-user", alice.address, "--auth-password", PASSWORD,
                "--from", alice.address, "--to", to,
                "--header", "Subject: Grüße 東京", "--body", "Schöne Grüße",
            ],
            capture_output=True, timeout=30,
        )  # fmt: skip

    result = swaks("friend@example.org")
    assert result.returncode == 0, result.stdout + result.stderr
    stored = OutboundMessage.objects.get()
    assert stored.subject == "Grüße 東京"
    assert "Subject: Grüße 東京\r\n".encode() in bytes(MessageBody.objects.get().raw)

    result = swaks(JOSE)
    assert result.returncode != 0
    assert b"553 5.6.7 " in result.stdout
    assert OutboundMessage.objects.count() == 1


# --- inbound MX -------------------------------------------------------------------------------


def test_mx_takes_utf8_sender_and_files_utf8_headers_unchanged(listeners, carol):
    raw = utf8_message("pelé@exämple.test", carol.address)
    with mx_client(listeners) as client:
        assert client.has_extn("smtputf8")
        refused = client.sendmail("pelé@exämple.test", [carol.address], raw, ["SMTPUTF8"])
        assert refused == {}
    [path] = maildir_files(carol)
    filed = path.read_bytes()
    assert filed.endswith(raw)  # RFC 6532 header fields byte for byte
    head = filed[: -len(raw)].decode()
    assert " with UTF8SMTP for <carol@acme.test>; " in head
    assert "smtp.mailfrom=" in head  # SPF was evaluated (against the A-label), not crashed


def test_mx_utf8_recipients_and_senders_without_the_parameter(listeners, carol):
    with mx_client(listeners) as client:
        client.command_encoding = "utf-8"
        assert client.mail("pelé@exämple.test")[0] == 550  # 5.6.7: no SMTPUTF8
        assert client.mail("pelé@exämple.test", ["SMTPUTF8"])[0] == 250
        # Hosted mailboxes are ASCII: a UTF-8 local part at a hosted domain is unknown.
        code, reply = client.rcpt("carolé@acme.test")
        assert (code, reply[:6]) == (550, b"5.1.1 ")
        code, reply = client.rcpt(JOSE)  # not ours: never an open relay
        assert (code, reply[:6]) == (550, b"5.7.1 ")
        assert client.rcpt(carol.address)[0] == 250


def test_mx_hosted_idn_domain_reached_by_its_u_label(listeners, account):
    domain = verified_domain(account, "xn--exmple-cua.test")
    dora = make_mailbox(account, domain, "dora")
    raw = utf8_message("someone@sender.test", "dora@exämple.test")
    with mx_client(listeners) as client:
        to = ["dora@exämple.test"]
        assert client.sendmail("someone@sender.test", to, raw, ["SMTPUTF8"]) == {}
    [path] = maildir_files(dora)
    assert path.read_bytes().endswith(raw)


def test_mx_non_ascii_ehlo_is_escaped_in_the_trace_field(listeners, carol):
    client = smtplib.SMTP(listeners.host, listeners.mx, timeout=10)
    with client:
        assert command(client, "EHLO mäil.sender.test".encode())[0] == 250
        client.ehlo_resp, client.does_esmtp = b"", True
        raw = utf8_message("news@sender.test", carol.address)
        assert client.sendmail("news@sender.test", [carol.address], raw) == {}
    [path] = maildir_files(carol)
    assert b"from m\\xe4il.sender.test ([127.0.0.1])" in path.read_bytes()
