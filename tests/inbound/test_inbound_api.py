"""The inbound API: address and domain (verified against local DNS), the received
messages and their raw bytes through both doors, retention, and deleting a server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.inbound.models import InboundMessage
from mailplane.inbound.retention import inbound_messages_prune
from mailplane.inbound.services import InboundRoute, inbound_accept
from mailplane.sending.requests import send_request_parse
from mailplane.sending.services import message_send
from mailplane.smtp.authres import AuthOutcome
from mailplane.webhooks.models import WebhookDelivery
from mailplane.webhooks.services import webhook_endpoint_create
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_make

RAW = (
    b"From: Bob <bob@elsewhere.test>\r\nTo: in@x.test\r\nSubject: Hello inbound\r\n"
    b"Message-ID: <m1@elsewhere.test>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
    b"--b\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=p.png\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--b--\r\n"
)


def receive(server, raw: bytes = RAW) -> InboundMessage:
    [message] = inbound_accept(
        routes=[InboundRoute(server.pk, server.organization_id, "in@x.test")],
        raw=raw,
        mail_from="bob@elsewhere.test",
        outcome=AuthOutcome(spf="pass"),
        authserv_id="mx.test",
    )
    return message


@pytest.fixture
def live(account):
    return server_make(account)


def test_a_server_has_an_inbound_address_on_the_inbound_host(account, live, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "INBOUND_HOST": "in.platform.test"}
    reply = account.client.get(f"/api/servers/{live.server.pk}/inbound/")
    assert reply.status_code == 200
    body = reply.json()
    local, _, host = body["address"].partition("@")
    assert host == "in.platform.test" and len(local) == 32
    assert (body["stream"], body["domain"], body["verified"]) == ("inbound", "", False)
    # The same address on every read.
    again = account.client.get(f"/api/servers/{live.server.pk}/inbound/").json()
    assert again["address"] == body["address"]


def test_the_inbound_domain_is_verified_by_its_mx_record(account, live, dns_server):
    path = f"/api/servers/{live.server.pk}/inbound/"
    body = account.client.patch(path, {"domain": "Reply.Shop.test."}, format="json").json()
    assert (body["domain"], body["verified"]) == ("reply.shop.test", False)
    body = account.client.post(path + "verify/").json()
    assert body["verified"] is False and "no MX record" in body["check_detail"]
    dns_server.mx("reply.shop.test", "mx.elsewhere.test")
    body = account.client.post(path + "verify/").json()
    assert body["verified"] is False and "mx.elsewhere.test" in body["check_detail"]
    dns_server.mx("reply.shop.test", body["mx_target"], preference=5)
    body = account.client.post(path + "verify/").json()
    assert body["verified"] is True and body["verified_at"]
    # A new domain must be verified again; "" clears it.
    body = account.client.patch(path, {"domain": "other.shop.test"}, format="json").json()
    assert body["verified"] is False
    assert account.client.patch(path, {"domain": ""}, format="json").json()["domain"] == ""


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"domain": "no spaces.test"}, 400),
        ({"domain": "x" * 300}, 400),
        ({"domain": "-bad-.test"}, 400),
        ({"domain": "mx.mailplane.localhost"}, 400),
        ({"domain": 12}, 400),
        ({}, 400),
        ({"domain": "acme.test"}, 400),  # a hosted mailbox domain
    ],
)
def test_bad_inbound_domains_are_400_naming_the_field(account, live, body, status):
    verified_domain(account, "acme.test")
    reply = account.client.patch(f"/api/servers/{live.server.pk}/inbound/", body, format="json")
    assert reply.status_code == status, reply.json()
    assert "domain" in reply.json()["error"]["details"]


def test_one_server_per_inbound_domain(account, live):
    other = server_make(account, name="second")
    first = account.client.patch(
        f"/api/servers/{live.server.pk}/inbound/", {"domain": "in.shop.test"}, format="json"
    )
    assert first.status_code == 200
    second = account.client.patch(
        f"/api/servers/{other.server.pk}/inbound/", {"domain": "in.shop.test"}, format="json"
    )
    assert second.status_code == 409
    assert "domain" in second.json()["error"]["details"]


def test_verify_without_a_domain_is_400(account, live):
    reply = account.client.post(f"/api/servers/{live.server.pk}/inbound/verify/")
    assert reply.status_code == 400 and "domain" in reply.json()["error"]["details"]


def test_received_messages_are_listed_and_their_raw_bytes_served(account, live):
    message = receive(live.server)
    page = account.client.get(f"/api/servers/{live.server.pk}/inbound/messages/").json()
    assert page["count"] == 1
    row = page["results"][0]
    assert (row["id"], row["subject"], row["from_email"]) == (
        message.pk,
        "Hello inbound",
        "bob@elsewhere.test",
    )
    assert (row["stream"], row["spf"], row["size"]) == ("inbound", "pass", len(RAW))
    detail = account.client.get(f"/api/inbound-messages/{message.pk}/").json()
    assert detail["text"].strip() == "body text"
    assert detail["attachments"] == [
        {"filename": "p.png", "content_type": "image/png", "content_id": "", "size": 6}
    ]
    raw = account.client.get(f"/api/inbound-messages/{message.pk}/raw/")
    assert raw.status_code == 200
    assert raw["Content-Type"] == "message/rfc822"
    assert raw.content == RAW
    # The server's full key reads the same; a send-only key is refused.
    assert live.full_client.get("/api/server/inbound-messages/").json()["count"] == 1
    assert live.full_client.get(f"/api/server/inbound-messages/{message.pk}/raw/").content == RAW
    full_detail = live.full_client.get(f"/api/server/inbound-messages/{message.pk}/").json()
    assert full_detail == detail
    for path in ("", f"{message.pk}/", f"{message.pk}/raw/"):
        assert live.client.get(f"/api/server/inbound-messages/{path}").status_code == 403


def test_another_servers_message_is_not_found_through_a_server_key(account, live):
    other = server_make(account, name="second")
    message = receive(other.server)
    assert live.full_client.get(f"/api/server/inbound-messages/{message.pk}/").status_code == 404
    assert (
        live.full_client.get(f"/api/server/inbound-messages/{message.pk}/raw/").status_code == 404
    )


def test_unknown_ids_are_404(account):
    for path, accept in [
        ("/api/inbound-messages/999999/", "application/json"),
        ("/api/inbound-messages/999999/raw/", "message/rfc822"),  # still a JSON error
        ("/api/inbound-messages/0/raw/", "*/*"),
    ]:
        reply = account.client.get(path, HTTP_ACCEPT=accept)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"


def test_the_inbound_stream_cannot_send_nor_be_the_default(account, live):
    verified_domain(account, "acme.test")
    reply = live.client.post("/api/email/", send_body(stream="inbound"), format="json")
    assert reply.status_code == 400
    assert "stream" in reply.json()["error"]["details"]
    reply = account.client.patch(
        f"/api/servers/{live.server.pk}/", {"default_stream": "inbound"}, format="json"
    )
    assert reply.status_code == 400 and "default_stream" in reply.json()["error"]["details"]
    reply = account.client.post(
        "/api/servers/", {"name": "x", "default_stream": "inbound"}, format="json"
    )
    assert reply.status_code == 400 and "default_stream" in reply.json()["error"]["details"]
    # The send path still works on the others.
    sent = message_send(server=live.server, request=send_request_parse(send_body()))
    assert sent.message is not None


def test_retention_prunes_raw_messages_after_the_log_period(account, live):
    old, recent = receive(live.server), receive(live.server)
    now = timezone.now()
    days = account.org.log_retention_days
    InboundMessage.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=days, hours=1))
    InboundMessage.objects.filter(pk=recent.pk).update(created_at=now - timedelta(days=days - 1))
    assert inbound_messages_prune(now=now) == 1
    assert list(InboundMessage.objects.values_list("pk", flat=True)) == [recent.pk]
    assert account.client.get(f"/api/inbound-messages/{old.pk}/raw/").status_code == 404


def test_deleting_a_server_removes_its_inbound_messages_and_no_others(account, live):
    other = server_make(account, name="second")
    webhook_endpoint_create(server=live.server, url="https://h.test/x", event_types=["inbound"])
    receive(live.server)
    kept = receive(other.server)
    assert WebhookDelivery.objects.filter(type="inbound").count() == 1
    assert account.client.delete(f"/api/servers/{live.server.pk}/").status_code == 204
    assert list(InboundMessage.objects.values_list("pk", flat=True)) == [kept.pk]
    assert not WebhookDelivery.objects.exists()


def test_only_enabled_endpoints_subscribed_to_inbound_get_a_delivery(account, live):
    webhook_endpoint_create(server=live.server, url="https://h.test/a", event_types=["inbound"])
    webhook_endpoint_create(server=live.server, url="https://h.test/b", event_types=["delivered"])
    webhook_endpoint_create(
        server=live.server, url="https://h.test/c", event_types=["inbound"], enabled=False
    )
    receive(live.server)
    assert list(WebhookDelivery.objects.values_list("endpoint__url", flat=True)) == [
        "https://h.test/a"
    ]
