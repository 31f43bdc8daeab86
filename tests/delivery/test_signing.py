"""DKIM signatures from our signer verify with dkimpy and with OpenDKIM (opendkim-testmsg)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailplane.delivery.signing import SigningError, body_relaxed, dkim_sign, header_relaxed
from tests.support.dns_server import DnsServer
from tests.support.tools import environment_missing, require_tool

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()

LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
DATE = b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
# RFC 5322-valid messages (OpenDKIM refuses a missing Date or a repeated To as syntax).
MESSAGES = {
    "plain 10 KB": (
        b"From: Alice <alice@acme.test>\r\nTo: <bob@dest.test>\r\nSubject: hello\r\n"
        + DATE
        + b"Message-ID: <1@acme.test>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + LINE * 140
    ),
    "folded headers, WSP runs, trailing WSP and blank lines": (
        b"From: a@acme.test\r\nTo: b@dest.test,\r\n\t c@dest.test\r\n" + DATE + b"Subject:   "
        b"spaced \t out  \r\n  and folded \r\n\r\n"
        b"body  with \t runs \t \r\n\r\n  indented\r\n\r\n\r\n \r\n"
    ),
    "bare LF line endings": b"From: a@acme.test\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n"
    b"Subject: lf\n\nline one\nline two\n",
    "no final CRLF": b"From: a@acme.test\r\n" + DATE + b"Subject: x\r\n\r\nlast line  ",
    "empty body": b"From: a@acme.test\r\n" + DATE + b"Subject: nothing\r\n\r\n",
    "headers only": b"From: a@acme.test\r\n" + DATE + b"Subject: no separator\r\n",
    "repeated trace headers, odd case": (
        b"Received: from a\r\nReceived: from b\r\nFROM: a@acme.test\r\n" + DATE + b"Comments: 1"
        b"\r\nComments: 2\r\nSubject:tight\r\n\r\nbody\r\n"
    ),
    "8-bit body": b"From: a@acme.test\r\n" + DATE + "Subject: ü\r\n\r\nGrüße\r\n".encode(),
}


def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
    assert name == b"sel._domainkey.acme.test."
    return f"v=DKIM1; k=rsa; p={PUBLIC}".encode()


def tamper(signed: bytes) -> bytes:
    """The From address changed by one character."""
    changed = re.sub(rb"(?im)^(from:[^\r\n]*?)@", rb"\1x@", signed, count=1)
    assert changed != signed
    return changed


def sign(raw: bytes) -> bytes:
    return dkim_sign(raw=raw, domain="acme.test", selector="sel", private_pem=PEM)


@pytest.mark.parametrize("name", MESSAGES)
def test_dkimpy_verifies_and_tampering_breaks_it(name):
    signed = sign(MESSAGES[name])
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(tamper(signed), dnsfunc=dnsfunc)
    if b"\r\n\r\n" in signed:
        assert not dkim.verify(signed + b"appended\r\n", dnsfunc=dnsfunc)


def test_repeated_signed_header_is_signed_per_instance():
    raw = b"From: a@acme.test\r\nTo: one@dest.test\r\nTo: two@dest.test\r\n\r\nbody\r\n"
    signed = sign(raw)
    assert b"h=from:to:to:" in signed
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"To: one", b"To: 0ne"), dnsfunc=dnsfunc)


def test_listed_absent_headers_cannot_be_added_afterwards():
    signed = sign(MESSAGES["plain 10 KB"])
    assert b"reply-to" in signed.split(b"\r\nFrom:")[0]
    assert not dkim.verify(b"Reply-To: evil@x.test\r\n" + signed, dnsfunc=dnsfunc)


def test_canonicalisation_matches_rfc_6376_examples():
    # RFC 6376 §3.4.5: "A: X", "B : Y\t\r\n\tZ  " relaxed; body " C \r\nD \t E\r\n\r\n\r\n".
    assert header_relaxed(b"A: X") == b"a:X\r\n"
    assert header_relaxed(b"B : Y\t\r\n\tZ  ") == b"b:Y Z\r\n"
    assert body_relaxed(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert body_relaxed(b"\r\n\r\n") == b""


def test_message_without_from_is_refused():
    with pytest.raises(SigningError):
        sign(b"Subject: anonymous\r\n\r\nbody\r\n")


# --- OpenDKIM -----------------------------------------------------------------------------


def _private_namespace_available() -> bool:
    """opendkim-testmsg asks the system resolver (port 53 of /etc/resolv.conf); we give it
    our test DNS server through a private mount namespace, which needs root + unshare."""
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def opendkim(tmp_path_factory):
    opendkim_testmsg = require_tool("opendkim-testmsg")
    require_tool("unshare")
    if not _private_namespace_available():
        environment_missing("needs root and unshare -m to point opendkim at the test DNS")
    host = f"127.53.{os.getpid() % 250}.{os.getpid() // 250 % 250 + 2}"
    try:
        server = DnsServer(host=host, port=53).start()
    except OSError as exc:
        environment_missing(f"cannot serve DNS on {host}:53 for opendkim: {exc}")
    server.txt("sel._domainkey.acme.test", f"v=DKIM1; k=rsa; p={PUBLIC}")
    resolv = tmp_path_factory.mktemp("opendkim") / "resolv.conf"
    resolv.write_text(f"nameserver {host}\noptions timeout:2 attempts:1\n")

    def verify(raw: bytes) -> subprocess.CompletedProcess[bytes]:
        script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "{opendkim_testmsg}"'
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script], input=raw, capture_output=True, timeout=30
        )

    yield verify
    server.stop()


@pytest.mark.parametrize("name", MESSAGES)
def test_opendkim_verifies(opendkim, name):
    signed = sign(MESSAGES[name])
    done = opendkim(signed)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    # Not vacuous: OpenDKIM does reject a changed message.
    bad = opendkim(tamper(signed))
    assert bad.returncode != 0, bad


def test_signatures_from_the_delivery_path_verify_with_opendkim(opendkim, tmp_path: Path):
    # The exact bytes a sink receives are covered in test_native/test_end_to_end; here the
    # same signer on a message as the submission server stores it (Received + CRLF).
    raw = (
        b"Received: from client.test\r\n\tby smtp.mailplane.test; now\r\n" + MESSAGES["plain 10 KB"]
    )
    done = opendkim(sign(raw))
    assert done.returncode == 0, done.stderr
