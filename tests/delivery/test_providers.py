"""Mailgun, SendGrid and SMTP smarthost providers against local servers speaking their protocols."""

from __future__ import annotations

import json
import time

import dkim
import pytest

from mailplane.delivery.worker import DeliveryWorker
from mailplane.queue.models import DeliveryEvent, QueuedRecipient
from mailplane.queue.services import message_enqueue
from mailplane.relays.models import RelayServer
from tests.delivery.conftest import raw_message


def relay(sender, provider, configuration, credentials=None):
    return RelayServer.objects.create(
        organization=sender.account.org,
        name=provider,
        provider=provider,
        configuration=configuration,
        credentials=credentials or {},
    )


def deliver_one(sender, relay_server, to="carol@dest.test"):
    message = sender.send(to, relay=relay_server)
    DeliveryWorker(rng=lambda: 0.5).run_once()
    return QueuedRecipient.objects.get(message=message)


def test_mailgun_raw_mime_send(sender, fake_mailgun):
    mg = relay(
        sender,
        "mailgun",
        {"domain": fake_mailgun.domain, "base_url": fake_mailgun.base_url},
        {"api_key": fake_mailgun.api_key},
    )
    row = deliver_one(sender, mg)
    assert row.status == "delivered" and "Queued. Thank you." in row.last_reply
    [request] = fake_mailgun.requests
    assert request.fields["to"] == b"carol@dest.test"
    signed = request.fields["message"]
    pub = f"v=DKIM1; k=rsa; p={sender.domain.dkim_public_key}".encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: pub)
    event = DeliveryEvent.objects.get(recipient=row, type="delivered")
    assert event.remote_host == "127.0.0.1"


def test_sendgrid_passes_a_malformed_message_id_on_as_written(sender, fake_sendgrid):
    """The header registry raises on `Message-ID: <` (IndexError): the payload used to
    fail to build, and the message never left."""
    sg = relay(
        sender, "sendgrid", {"base_url": fake_sendgrid.base_url}, {"api_key": fake_sendgrid.api_key}
    )
    raw = raw_message(sender=sender.alice.address, to="carol@dest.test").replace(
        b"Message-ID: <Hello@acme.test>", b"Message-ID: <\r\nX-Note: =?utf-8?q?caf=C3=A9?="
    )
    message = message_enqueue(
        organization=sender.account.org,
        mail_from=sender.alice.address,
        recipients=["carol@dest.test"],
        raw=raw,
        mailbox=sender.alice,
        relay_server=sg,
    )
    DeliveryWorker(rng=lambda: 0.5).run_once()
    row = QueuedRecipient.objects.get(message=message)
    assert row.status == "delivered", row.last_reply
    [request] = fake_sendgrid.requests
    assert request.json["headers"]["Message-ID"] == "<"
    assert request.json["headers"]["X-Note"] == "café"  # still decoded where it parses


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "bounced"), (401, "bounced"), (429, "deferred"), (500, "deferred")],
)
def test_mailgun_error_replies(sender, fake_mailgun, status, expected):
    mg = relay(
        sender,
        "mailgun",
        {"domain": fake_mailgun.domain, "base_url": fake_mailgun.base_url},
        {"api_key": fake_mailgun.api_key},
    )
    fake_mailgun.script.append(status)
    row = deliver_one(sender, mg)
    assert row.status == expected and f"HTTP {status}" in row.last_reply


def test_mailgun_wrong_key_is_permanent(sender, fake_mailgun):
    mg = relay(
        sender,
        "mailgun",
        {"domain": fake_mailgun.domain, "base_url": fake_mailgun.base_url},
        {"api_key": "wrong"},
    )
    row = deliver_one(sender, mg)
    assert row.status == "bounced" and "Forbidden" in row.last_reply


def test_http_api_sends_reuse_one_pooled_connection(sender, fake_mailgun, fake_sendgrid):
    # httpx keeps the connection open between a chunk's sends (urllib opened one per send).
    mg = relay(
        sender,
        "mailgun",
        {"domain": fake_mailgun.domain, "base_url": fake_mailgun.base_url},
        {"api_key": fake_mailgun.api_key},
    )
    sg = relay(
        sender, "sendgrid", {"base_url": fake_sendgrid.base_url}, {"api_key": fake_sendgrid.api_key}
    )
    to = ("a@dest.test", "b@dest.test", "c@dest.test")
    for relay_server, fake in ((mg, fake_mailgun), (sg, fake_sendgrid)):
        message = sender.send(*to, relay=relay_server)
        DeliveryWorker(rng=lambda: 0.5).run_once()
        statuses = QueuedRecipient.objects.filter(message=message).values_list("status", flat=True)
        assert list(statuses) == ["delivered"] * 3
        assert sorted(r.recipient for r in fake.requests) == list(to)
        assert len({r.client_port for r in fake.requests}) == 1, fake.kind


def test_unreachable_http_api_defers(sender, mx_port):
    from tests.support.smtp_sink import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    mg = relay(sender, "mailgun", {"domain": "mg.acme.test", "base_url": closed}, {"api_key": "k"})
    row = deliver_one(sender, mg)
    assert row.status == "deferred" and "Mailgun API unreachable" in row.last_reply


def test_sendgrid_v3_send(sender, fake_sendgrid):
    sg = relay(
        sender, "sendgrid", {"base_url": fake_sendgrid.base_url}, {"api_key": fake_sendgrid.api_key}
    )
    row = deliver_one(sender, sg)
    assert row.status == "delivered" and row.last_reply.startswith("HTTP 202")
    [request] = fake_sendgrid.requests
    body = request.json
    assert body["personalizations"] == [{"to": [{"email": "carol@dest.test"}]}]
    assert body["from"] == {"email": "alice@acme.test", "name": "Alice"}
    assert body["subject"] == "Hello"
    assert body["content"] == [{"type": "text/plain", "value": "Hi there.\n"}]
    assert body["headers"]["Message-ID"] == "<Hello@acme.test>"
    assert "DKIM-Signature" not in json.dumps(body["headers"])


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "bounced"), (403, "bounced"), (413, "bounced"), (429, "deferred"), (503, "deferred")],
)
def test_sendgrid_error_replies(sender, fake_sendgrid, status, expected):
    sg = relay(
        sender, "sendgrid", {"base_url": fake_sendgrid.base_url}, {"api_key": fake_sendgrid.api_key}
    )
    fake_sendgrid.script.append(status)
    row = deliver_one(sender, sg)
    assert row.status == expected and f"forced {status}" in row.last_reply


def test_sendgrid_bad_key(sender, fake_sendgrid):
    sg = relay(sender, "sendgrid", {"base_url": fake_sendgrid.base_url}, {"api_key": "nope"})
    row = deliver_one(sender, sg)
    assert row.status == "bounced" and "authorization grant is invalid" in row.last_reply


def test_smtp_smarthost(sender, mx_sinks, mx_port):
    hub = mx_sinks("accept")
    smart = relay(sender, "smtp", {"host": hub.address, "port": mx_port, "tls_mode": "none"})
    row = deliver_one(sender, smart, to="erin@elsewhere.test")  # no DNS needed at all
    assert row.status == "delivered"
    [got] = hub.received
    assert got.rcpt_tos == ["erin@elsewhere.test"]
    assert DeliveryEvent.objects.get(recipient=row, type="delivered").remote_host == hub.address


def test_unreachable_smarthost_defers(sender, mx_sinks, mx_port):
    hub = mx_sinks("accept")
    hub.stop()
    smart = relay(sender, "smtp", {"host": hub.address, "port": mx_port, "tls_mode": "none"})
    row = deliver_one(sender, smart)
    assert row.status == "deferred" and "4.4.1" in row.last_reply


def test_smarthost_chunks_for_different_domains_share_one_session(sender, mx_sinks, mx_port):
    hub = mx_sinks("accept")
    smart = relay(sender, "smtp", {"host": hub.address, "port": mx_port, "tls_mode": "none"})
    for n in range(3):
        sender.send(f"user{n}@one.test", relay=smart)
        sender.send(f"user{n}@two.test", relay=smart)
        sender.send(f"user{n}@three.test", relay=smart)

    # One chunk at a time: each domain's chunk finds the previous chunk's session idle.
    assert DeliveryWorker(rng=lambda: 0.5, concurrency=1).run_once() == 9

    assert set(QueuedRecipient.objects.values_list("status", flat=True)) == {"delivered"}
    assert len(hub.received) == 9
    assert hub.connections == 1
    # The pass ends by QUITting what it kept.
    assert settled_quits(hub) == 1


def settled_quits(sink) -> int:
    """QUITs seen once the sink has closed every session."""
    deadline = time.monotonic() + 5
    while sink.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    return int(sink.quits)
