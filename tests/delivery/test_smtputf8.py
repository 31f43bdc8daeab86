"""Internationalised mail through the whole path: submitted with SMTPUTF8 (RFC 6531), UTF-8
header fields (RFC 6532) kept byte for byte through queue, DKIM signing and delivery, and
the recipient's U-label domain looked up in the DNS as its A-label."""

from __future__ import annotations

import asyncio

import dkim
import pytest

from mailplane.delivery.mx import RouteError, mx_hosts
from mailplane.dns import async_resolver_from_settings
from mailplane.queue.models import DeliveryEvent, QueuedRecipient
from tests.delivery.test_end_to_end import dns_dkim_key, run_delivery_until
from tests.smtp.conftest import PASSWORD, listeners, make_mailbox, smtps, tls_pair  # noqa: F401
from tests.support.fixtures import verified_domain

pytestmark = pytest.mark.timeout(60)

JOSE = "josé@exämple.test"
A_LABEL = "xn--exmple-cua.test"


def test_mx_lookup_asks_for_the_a_label_and_reports_the_u_label(dns_server):
    dns_server.mx(A_LABEL, f"mx1.{A_LABEL}", preference=10)
    resolver = async_resolver_from_settings()
    [host] = asyncio.run(mx_hosts(resolver, "exämple.test"))
    assert host.name == f"mx1.{A_LABEL}"
    assert dns_server.queried(A_LABEL, "MX")
    with pytest.raises(RouteError) as missing:
        asyncio.run(mx_hosts(resolver, "nïrgends.test"))
    assert "nïrgends.test" in missing.value.result.reply  # the name the sender wrote
    with pytest.raises(RouteError) as invalid:
        asyncio.run(mx_hosts(resolver, "x" * 70 + "é.test"))
    assert invalid.value.result.reply.startswith("553 5.1.2 ")


def test_utf8_message_submitted_with_smtputf8_arrives_signed_and_intact(
    listeners,  # noqa: F811
    account,
    dns_server,
    mx_sinks,
):
    domain = verified_domain(account, "acme.test")
    alice = make_mailbox(account, domain, "alice")
    sink = mx_sinks("accept", smtputf8=True)
    dns_server.mx(A_LABEL, f"mx1.{A_LABEL}", preference=10)
    dns_server.a(f"mx1.{A_LABEL}", sink.address)
    dns_server.txt(
        f"{domain.dkim_selector}._domainkey.acme.test",
        f"v=DKIM1; k=rsa; p={domain.dkim_public_key}",
    )
    headers = (
        "From: Ålice Ünïcode 東京 <alice@acme.test>\r\nTo: José <josé@exämple.test>\r\n"
        "Subject: Grüße aus Köln 😀\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    body = "Schöne Grüße,\r\nÅlice\r\n".encode()

    with smtps(listeners) as client:
        client.login(alice.address, PASSWORD)
        assert client.sendmail(alice.address, [JOSE], headers + body, ["SMTPUTF8"]) == {}

    run_delivery_until(lambda: len(sink.received) == 1)

    [got] = sink.received
    assert got.rcpt_tos == [JOSE]
    assert got.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(got.data, dnsfunc=dns_dkim_key)
    assert got.data.endswith(headers + body)  # every byte the client sent
    tampered = got.data.replace("Köln".encode(), b"Koln")
    assert not dkim.verify(tampered, dnsfunc=dns_dkim_key)  # the UTF-8 Subject is signed

    row = QueuedRecipient.objects.get()
    assert (row.rcpt_to, row.rcpt_domain, row.status) == (JOSE, "exämple.test", "delivered")
    delivered = DeliveryEvent.objects.get(type="delivered")
    assert delivered.remote_host == f"mx1.{A_LABEL}"
    listed = account.client.get(f"/api/messages/?mailbox={alice.pk}").json()
    [message] = listed["results"]
    assert message["subject"] == "Grüße aus Köln 😀"
    assert [r["email"] for r in message["recipients"]] == [JOSE]
