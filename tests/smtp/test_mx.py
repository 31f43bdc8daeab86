"""Inbound MX over real sockets: routing, relay refusal, SPF/DKIM/DMARC against local DNS."""

from __future__ import annotations

import base64
import smtplib
import subprocess

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.smtp.conftest import maildir_files, make_mailbox, message
from tests.support.fixtures import verified_domain
from tests.support.tools import requires_tool

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def carol(account):
    return make_mailbox(account, verified_domain(account, "acme.test"), "carol")


def mx_client(listeners) -> smtplib.SMTP:
    client = smtplib.SMTP(
        listeners.host, listeners.mx, timeout=10, local_hostname="mail.sender.test"
    )
    client.ehlo()
    return client


@pytest.fixture
def sender_dns(dns_server):
    """sender.test: SPF allows 127.0.0.1, a DKIM key at sel._domainkey, DMARC p=reject."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns_server.txt("sender.test", "v=spf1 ip4:127.0.0.1 -all")
    p = base64.b64encode(public).decode()
    dns_server.txt("sel._domainkey.sender.test", "v=DKIM1; k=rsa; p=" + p[:200], p[200:])
    dns_server.txt("_dmarc.sender.test", "v=DMARC1; p=reject")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return dns_server, pem


def test_mx_delivers_to_hosted_mailbox_with_authentication_results(listeners, carol, sender_dns):
    _, pem = sender_dns
    raw = message("news@sender.test", carol.address, subject="Signed")
    signature = dkim.sign(raw, b"sel", b"sender.test", pem, include_headers=[b"from", b"subject"])
    with mx_client(listeners) as client:
        assert not client.has_extn("auth")  # an MX takes no logins
        refused = client.sendmail("bounce@sender.test", [carol.address], signature + raw)
        assert refused == {}
    files = maildir_files(carol)
    assert len(files) == 1
    stored = files[0].read_bytes()
    header = stored.split(b"\r\nReceived:", 1)[0].decode()
    assert header.startswith("Authentication-Results: mx.mailplane.test;")
    assert "spf=pass smtp.mailfrom=sender.test" in header
    assert "dkim=pass header.d=sender.test header.s=sel" in header
    assert "dmarc=pass (p=reject) header.from=sender.test" in header
    assert stored.endswith(raw)


def test_dmarc_reject_policy_refuses_forgery(listeners, carol, sender_dns):
    dns, _ = sender_dns
    dns.txt("forger.test", "v=spf1 ip4:127.0.0.1 -all")
    with mx_client(listeners) as client:
        client.mail("x@forger.test")
        client.rcpt(carol.address)
        code, reply = client.data(message("ceo@sender.test", carol.address))
    assert (code, reply[:5]) == (550, b"5.7.1")
    assert maildir_files(carol) == []


def test_dmarc_quarantine_files_into_junk_and_no_dns_gives_none(listeners, carol, dns_server):
    dns_server.txt("_dmarc.shady.test", "v=DMARC1; p=quarantine")
    with mx_client(listeners) as client:
        client.sendmail("a@shady.test", [carol.address], message("a@shady.test", carol.address))
        client.sendmail("a@plain.test", [carol.address], message("a@plain.test", carol.address))
    assert len(maildir_files(carol, "Junk")) == 1
    inbox = maildir_files(carol)
    assert len(inbox) == 1
    assert b"spf=none" in inbox[0].read_bytes() and b"dmarc=none" in inbox[0].read_bytes()


def test_unknown_recipient_and_open_relay_refused(listeners, carol, dns_server):
    with mx_client(listeners) as client:
        client.mail("someone@example.org")
        code, reply = client.rcpt("nobody@acme.test")
        assert (code, reply[:5]) == (550, b"5.1.1")
        code, reply = client.rcpt("victim@gmail.com")
        assert (code, reply[:5]) == (550, b"5.7.1")
        assert client.docmd("DATA")[0] == 503  # no valid recipient: no transaction
        client.rset()
        refused = client.sendmail(
            "someone@example.org", [carol.address], message("someone@example.org", carol.address)
        )
        assert refused == {}
    assert len(maildir_files(carol)) == 1


def test_forged_authentication_results_are_removed(listeners, carol, dns_server):
    raw = (
        b"Authentication-Results: mx.mailplane.test; spf=pass; dkim=pass; dmarc=pass\r\n"
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"From: a@plain.test\r\nTo: carol@acme.test\r\nSubject: forged\r\n\r\nhi\r\n"
    )
    with mx_client(listeners) as client:
        client.sendmail("a@plain.test", [carol.address], raw)
    stored = maildir_files(carol)[0].read_bytes()
    assert stored.count(b"Authentication-Results: mx.mailplane.test") == 1
    assert b"Authentication-Results: other.example; spf=fail" in stored


def test_mx_oversized_data_and_recipient_limit(listeners, carol, dns_server):
    with mx_client(listeners) as client:
        client.mail("a@plain.test")
        assert [client.rcpt(carol.address)[0] for _ in range(6)][-1] == 452
        big = message("a@plain.test", carol.address, body=("z" * 990 + "\r\n") * 300)
        code, _ = client.data(big)
        assert code == 552
        assert client.noop()[0] == 250
    assert maildir_files(carol) == []


@requires_tool("swaks")
def test_swaks_delivers_through_mx_with_starttls(listeners, carol, dns_server):
    result = subprocess.run(
        [
            "swaks", "--server", listeners.host, "--port", str(listeners.mx), "--tls",
            "--from", "friend@plain.test", "--to", carol.address,
            "--header", "Subject: via swaks mx",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stored = maildir_files(carol)[0].read_bytes()
    assert b"with ESMTPS" in stored and b"Subject: via swaks mx" in stored
