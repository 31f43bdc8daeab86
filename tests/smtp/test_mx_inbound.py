"""Inbound streams over real sockets: smtplib and swaks against the live MX, the message
stored and posted to a local HTTP receiver, whose signatures the Standard Webhooks reference
library verifies."""

from __future__ import annotations

import base64
import json
import smtplib
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks.webhooks import Webhook

from mailplane.inbound.models import InboundMessage
from mailplane.inbound.services import inbound_address, server_inbound_get
from mailplane.webhooks.models import WebhookDelivery
from mailplane.webhooks.runner import WebhookWorker
from mailplane.webhooks.services import webhook_endpoint_create
from tests.queue.dbfail import refused_by_database
from tests.smtp.conftest import maildir_files, make_mailbox
from tests.support.fixtures import verified_domain
from tests.support.servers import server_make
from tests.support.tools import requires_tool
from tests.support.webhook_receiver import Answer, Receiver

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "WEBHOOKS_RETRY_SCHEDULE": "0.05,0.05,0.05,0.05,0.05,0.05",
        "WEBHOOKS_TIMEOUT": 5.0,
        "WEBHOOKS_POLL_INTERVAL": 0.02,
        "WEBHOOKS_ALLOW_PRIVATE": True,
        "INBOUND_HOST": "inbound.mailplane.test",
    }


@pytest.fixture
def inbox() -> Iterator[Receiver]:
    """A local HTTP receiver (tests/support/webhook_receiver.py)."""
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def hooked(listeners, account, inbox):
    """A server with an `inbound` endpoint at the receiver; its inbound address."""
    live = server_make(account)
    issued = webhook_endpoint_create(server=live.server, url=inbox.url(), event_types=["inbound"])
    address = inbound_address(server_inbound_get(server=live.server))
    return live, issued.secret, address


@pytest.fixture
def sender_dns(dns_server):
    """sender.test: SPF allows 127.0.0.1, a DKIM key at sel._domainkey, DMARC p=none."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dns_server.txt("sender.test", "v=spf1 ip4:127.0.0.1 -all")
    p = base64.b64encode(public).decode()
    dns_server.txt("sel._domainkey.sender.test", "v=DKIM1; k=rsa; p=" + p[:200], p[200:])
    dns_server.txt("_dmarc.sender.test", "v=DMARC1; p=none")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def mx_client(listeners) -> smtplib.SMTP:
    client = smtplib.SMTP(
        listeners.host, listeners.mx, timeout=10, local_hostname="mail.sender.test"
    )
    client.ehlo()
    return client


def reply_message(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jörg Müller <jorg@sender.test>"
    msg["To"] = to
    msg["Cc"] = "Other <other@sender.test>"
    msg["Subject"] = "Re: your order ✓"
    msg["Message-ID"] = "<reply-1@sender.test>"
    msg.set_content("Thanks, that works.\n\nOn Mon, 1 Dec 2026, Shop wrote:\n> Your order\n")
    msg.add_alternative("<p>Thanks, that works.</p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")


def test_mail_to_the_inbound_address_reaches_the_webhook_signed(
    listeners,
    hooked,
    sender_dns,
    inbox,
):
    live, secret, address = hooked
    raw = reply_message(address)
    signed = dkim.sign(raw, b"sel", b"sender.test", sender_dns, include_headers=[b"from"]) + raw
    with mx_client(listeners) as client:
        assert client.sendmail("bounce@sender.test", [address], signed) == {}
    # The 250 came after the commit: the message and its delivery are there already.
    stored = InboundMessage.objects.get(server=live.server)
    assert WebhookDelivery.objects.filter(type="inbound", state="pending").count() == 1

    WebhookWorker().run_until_idle(timeout=20)

    [got] = inbox.accepted()
    payload = Webhook(secret).verify(got.body, got.headers)  # the reference library
    assert payload["type"] == "inbound"
    data = payload["data"]
    assert data["inbound_message_id"] == stored.pk
    assert (data["server_id"], data["stream"]) == (live.server.pk, "inbound")
    assert (data["mail_from"], data["rcpt_to"]) == ("bounce@sender.test", address)
    assert data["mailbox_hash"] == ""
    assert data["from"] == {"email": "jorg@sender.test", "name": "Jörg Müller"}
    assert data["to"] == [{"email": address, "name": ""}]
    assert data["cc"] == [{"email": "other@sender.test", "name": "Other"}]
    assert data["subject"] == "Re: your order ✓"
    assert data["message_id_header"] == "<reply-1@sender.test>"
    assert "On Mon, 1 Dec 2026, Shop wrote:" in data["text"]
    assert data["stripped_text_reply"] == "Thanks, that works."
    assert data["html"].strip() == "<p>Thanks, that works.</p>"
    [pdf] = data["attachments"]
    assert (pdf["filename"], pdf["content_type"]) == ("a.pdf", "application/pdf")
    assert base64.b64decode(pdf["content"]) == b"%PDF-1.4 fake"
    assert data["attachments_omitted"] is False
    auth = data["auth"]
    assert (auth["spf"], auth["dmarc"]) == ("pass", "pass")
    assert auth["dkim"] == [{"result": "pass", "domain": "sender.test", "selector": "sel"}]
    assert auth["authentication_results"].startswith("mx.mailplane.test; spf=pass")
    assert {"name": "Subject", "value": "Re: your order ✓"} in data["headers"]
    # The raw message is what the MX stored: our trace fields on top of what was sent.
    assert bytes(stored.raw).startswith(b"Authentication-Results: mx.mailplane.test;")
    assert bytes(stored.raw).endswith(signed)
    assert (stored.spf, stored.dkim, stored.dmarc) == ("pass", "pass", "pass")


def test_a_failing_receiver_gets_it_again_with_the_same_webhook_id(
    listeners,
    hooked,
    dns_server,
    inbox,
):
    _, secret, address = hooked
    inbox.script = lambda n, body: Answer(503, b"busy") if n < 3 else Answer(200)
    with mx_client(listeners) as client:
        client.sendmail("a@plain.test", [address], reply_message(address))
    WebhookWorker().run_until_idle(timeout=20)
    assert len(inbox.received) == 4
    assert len({r.headers["webhook-id"] for r in inbox.received}) == 1
    Webhook(secret).verify(inbox.received[-1].body, inbox.received[-1].headers)
    assert WebhookDelivery.objects.get().state == "delivered"


def test_unknown_inbound_token_is_550_511(listeners, hooked, dns_server):
    with mx_client(listeners) as client:
        client.mail("a@plain.test")
        code, reply = client.rcpt("0" * 32 + "@inbound.mailplane.test")
    assert (code, reply[:5]) == (550, b"5.1.1")
    assert not InboundMessage.objects.exists()


def test_an_unverified_inbound_domain_routes_nothing_and_a_verified_one_does(
    listeners, hooked, dns_server
):
    from mailplane.inbound.services import server_inbound_update, server_inbound_verify

    live, _, _ = hooked
    server_inbound_update(server=live.server, domain="reply.customer.test")
    with mx_client(listeners) as client:
        client.mail("a@plain.test")
        code, reply = client.rcpt("anyone@reply.customer.test")
        assert (code, reply[:5]) == (550, b"5.7.1")  # not ours (yet): no relay
    dns_server.mx("reply.customer.test", "mx.mailplane.localhost")
    assert server_inbound_verify(server=live.server).verified_at is not None
    with mx_client(listeners) as client:
        assert (
            client.sendmail(
                "a@plain.test", ["anyone@reply.customer.test"], b"Subject: x\r\n\r\nhi\r\n"
            )
            == {}
        )
    assert InboundMessage.objects.get().rcpt_to == "anyone@reply.customer.test"


def test_plus_addressing_reaches_the_server_with_its_mailbox_hash(
    listeners, hooked, dns_server, inbox
):
    _, secret, address = hooked
    token, _, host = address.partition("@")
    tagged = f"{token}+Ticket-42@{host}"
    with mx_client(listeners) as client:
        assert client.sendmail("a@plain.test", [tagged], reply_message(tagged)) == {}
    WebhookWorker().run_until_idle(timeout=20)
    data = Webhook(secret).verify(inbox.accepted()[0].body, inbox.accepted()[0].headers)
    assert data["data"]["rcpt_to"] == tagged.lower()
    assert data["data"]["mailbox_hash"] == "ticket-42"


def test_one_message_to_a_mailbox_and_an_inbound_address_reaches_both(
    listeners, account, hooked, dns_server
):
    _, _, address = hooked
    carol = make_mailbox(account, verified_domain(account, "acme.test"), "carol")
    with mx_client(listeners) as client:
        client.sendmail("a@plain.test", [carol.address, address], reply_message(address))
    assert len(maildir_files(carol)) == 1
    assert InboundMessage.objects.count() == 1


def _multipart(parts: int, depth: int = 1) -> bytes:
    head = b"From: a@plain.test\r\nTo: x@y.test\r\nSubject: bomb\r\n"
    body = head
    for i in range(depth):
        body += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    for i in range(parts):
        body += b"Content-Type: text/plain\r\n\r\np%d\r\n--b%d\r\n" % (i, depth - 1)
    body += b"Content-Type: text/plain\r\n\r\nlast\r\n"
    for i in reversed(range(depth)):
        body += b"--b%d--\r\n" % i
    return body


@pytest.mark.parametrize(
    ("raw", "why"),
    [(_multipart(300), b"MIME parts"), (_multipart(1, depth=40), b"nested")],
    ids=["too-many-parts", "too-deep"],
)
def test_hostile_mime_is_refused_with_554_560_and_nothing_stored(
    listeners, hooked, dns_server, quiet_logs, raw, why
):
    _, _, address = hooked
    with mx_client(listeners) as client:
        client.mail("a@plain.test")
        client.rcpt(address)
        code, reply = client.data(raw)
        assert (code, reply[:5]) == (554, b"5.6.0")
        assert why in reply
        assert client.noop()[0] == 250  # the session goes on
    assert not InboundMessage.objects.exists()
    assert not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe garbage with no header at all\r\n\x01\x02\x7f",
        b"Subject: =?x-unknown?q?caf=E9?= \xe9\xff\r\nContent-Type: text/plain; charset=rot13"
        b"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b'From: <<<@@@>>>, "unterminated\r\nTo: ,,,;;;\r\nSubject: \x1bctl\r\n\r\nx\r\n',
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative\r\n\r\nx\r\n",
    ],
    ids=["no-headers", "bad-charsets", "empty-boundary", "broken-addresses", "empty-rfc822"],
)
def test_malformed_mime_is_accepted_and_posted_without_a_crash(
    listeners,
    hooked,
    dns_server,
    quiet_logs,
    inbox,
    raw,
):
    _, secret, address = hooked
    with mx_client(listeners) as client:
        assert client.sendmail("a@plain.test", [address], raw) == {}
    WebhookWorker().run_until_idle(timeout=20)
    [got] = inbox.accepted()
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["data"]["inbound_message_id"] == InboundMessage.objects.get().pk
    json.dumps(payload, ensure_ascii=False).encode("utf-8")  # valid UTF-8 throughout


def test_oversized_message_is_552_534(listeners, hooked, dns_server):
    _, _, address = hooked
    with mx_client(listeners) as client:
        client.mail("a@plain.test")
        client.rcpt(address)
        code, reply = client.data(b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 300)
    assert (code, reply[:5]) == (552, b"5.3.4")
    assert not InboundMessage.objects.exists()


def test_attachments_past_the_bound_are_listed_without_content(
    listeners,
    hooked,
    dns_server,
    settings,
    inbox,
):
    settings.MAILPLANE = {**settings.MAILPLANE, "INBOUND_ATTACHMENTS_MAX_BYTES": 12}
    _, secret, address = hooked
    with mx_client(listeners) as client:
        client.sendmail("a@plain.test", [address], reply_message(address))
    WebhookWorker().run_until_idle(timeout=20)
    data = Webhook(secret).verify(inbox.accepted()[0].body, inbox.accepted()[0].headers)
    [pdf] = data["data"]["attachments"]
    assert (pdf["content"], pdf["size"]) == (None, 13)
    assert data["data"]["attachments_omitted"] is True


def test_a_failed_commit_answers_451_and_leaves_nothing(listeners, hooked, dns_server):
    """The delivery row fails inside the database: the message row goes with it (one
    transaction), the MX answers 4xx, and the sender's retry is the copy that counts."""
    _, _, address = hooked
    table = WebhookDelivery._meta.db_table
    with refused_by_database(table, "INSERT", "1 = 1"), mx_client(listeners) as client:
        client.mail("a@plain.test")
        client.rcpt(address)
        code, reply = client.data(reply_message(address))
    assert (code, reply[:5]) == (451, b"4.3.0")
    assert not InboundMessage.objects.exists()
    with mx_client(listeners) as client:
        assert client.sendmail("a@plain.test", [address], reply_message(address)) == {}
    assert InboundMessage.objects.count() == WebhookDelivery.objects.count() == 1


@requires_tool("swaks")
def test_swaks_reaches_the_inbound_webhook(
    listeners,
    hooked,
    dns_server,
    inbox,
):
    _, secret, address = hooked
    result = subprocess.run(
        [
            "swaks", "--server", listeners.host, "--port", str(listeners.mx), "--tls",
            "--from", "friend@plain.test", "--to", address,
            "--header", "Subject: via swaks inbound", "--body", "hello from swaks",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    WebhookWorker().run_until_idle(timeout=20)
    data = Webhook(secret).verify(inbox.accepted()[0].body, inbox.accepted()[0].headers)
    assert data["data"]["subject"] == "via swaks inbound"
    assert data["data"]["text"].strip() == "hello from swaks"
