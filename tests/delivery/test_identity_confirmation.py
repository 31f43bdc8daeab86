"""A sender identity's confirmation travels our own outbound path: the delivery service
takes it from the queue to the address's MX (a local sink), and the link in what the sink
received confirms the identity."""

from __future__ import annotations

import email
import re
from email.policy import default as default_policy

import pytest
from rest_framework.test import APIClient

from mailplane.queue.models import QueuedRecipient
from mailplane.servers.models import SenderIdentity
from tests.delivery.test_end_to_end import run_delivery_until

pytestmark = pytest.mark.timeout(60)


def test_the_confirmation_reaches_the_mx_and_its_link_confirms(
    transactional_db, account, dns_server, mx_sinks, settings
):
    settings.MAILPLANE = {**settings.MAILPLANE, "PUBLIC_URL": "https://mail.example.test"}
    sink = mx_sinks("accept")
    dns_server.mx("gmail.test", "mx.gmail.test", preference=10)
    dns_server.a("mx.gmail.test", sink.address)
    reply = account.client.post(
        "/api/sender-identities/", {"address": "alice@gmail.test"}, format="json"
    )
    assert reply.status_code == 201, reply.json()

    run_delivery_until(lambda: len(sink.received) == 1)

    [got] = sink.received
    assert got.rcpt_tos == ["alice@gmail.test"]
    parsed = email.message_from_bytes(got.data, policy=default_policy)
    assert parsed["Subject"] == "Confirm your sender address"
    text = parsed.get_content()  # type: ignore[attr-defined]
    link = re.search(
        r"https://mail\.example\.test/api/sender-identities/confirm/\?token=(\S+)", text
    )
    assert link, text
    assert QueuedRecipient.objects.get().status == "delivered"

    confirmed = APIClient().post(
        "/api/sender-identities/confirm/", {"token": link[1]}, format="json"
    )
    assert confirmed.status_code == 200, confirmed.content
    assert SenderIdentity.objects.get().status == "verified"
