"""Single-address sender identities: added with an account key, confirmed by a link
mailed through our own queue, refused as senders until then; hostile input."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email.policy import default as default_policy

import pytest
from django.utils import timezone

from mailplane.queue.models import MessageBody, MessageSource, OutboundMessage
from mailplane.servers.models import SenderIdentity
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_client, server_make

CONFIRM = "/api/sender-identities/confirm/"


@pytest.fixture
def live(account):
    verified_domain(account, "acme.test")
    return server_make(account)


def _mailed_token(address: str) -> str:
    """The token in the newest confirmation queued to `address` (read from the queue)."""
    message = OutboundMessage.objects.filter(recipients__rcpt_to=address).order_by("-pk").first()
    assert message is not None, f"no confirmation queued to {address}"
    assert message.source == MessageSource.SYSTEM
    raw = bytes(MessageBody.objects.get(message=message).raw)
    parsed = email.message_from_bytes(raw, policy=default_policy)
    assert parsed["To"] == address and parsed["Auto-Submitted"] == "auto-generated"
    text = parsed.get_content()  # type: ignore[attr-defined]
    found = re.search(r"http://testserver-public/api/sender-identities/confirm/\?token=(\S+)", text)
    assert found, text
    return found[1]


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "PUBLIC_URL": "http://testserver-public"}


def _add(account, address="alice@gmail.com", **extra):
    reply = account.client.post(
        "/api/sender-identities/", {"address": address, **extra}, format="json"
    )
    return reply


def test_an_address_is_confirmed_by_the_mailed_link_and_then_sends(live):
    refused = live.client.post(
        "/api/email/", send_body(**{"from": "alice@gmail.com"}), format="json"
    )
    assert refused.status_code == 422
    assert "alice@gmail.com (address)" in refused.json()["error"]["details"]["from"][0]

    reply = _add(live.account, "Alice@GMail.com", name="Alice")
    assert reply.status_code == 201, reply.json()
    body = reply.json()
    assert (body["address"], body["status"], body["server"]) == ("alice@gmail.com", "pending", None)
    assert body["confirmation_expires_at"] is not None
    token = _mailed_token("alice@gmail.com")
    assert token not in str(list(SenderIdentity.objects.values()))  # only a digest is kept

    pending = live.client.post(
        "/api/email/", send_body(**{"from": "alice@gmail.com"}), format="json"
    )
    assert pending.status_code == 422
    error = pending.json()["error"]
    assert error["code"] == "sender_not_verified"
    assert "not confirmed" in error["details"]["from"][0] and "alice@gmail.com" in error["message"]

    # The link's page names the address and changes nothing (scanners fetch links).
    page = live.client.get(f"{CONFIRM}?token={token}")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert b"alice@gmail.com" in page.content and b'method="post"' in page.content
    assert SenderIdentity.objects.get().status == "pending"

    confirmed = live.client.post(CONFIRM, {"token": token}, format="json")
    assert confirmed.status_code == 200, confirmed.content
    assert confirmed.json()["status"] == "verified" and confirmed.json()["confirmed_at"]

    sent = live.client.post(
        "/api/email/", send_body(**{"from": "Alice <alice@gmail.com>"}), format="json"
    )
    assert sent.status_code == 200, sent.json()
    message = OutboundMessage.objects.get(pk=sent.json()["id"])
    assert message.domain is None  # no DKIM key of ours for gmail.com
    assert message.relay_server == live.account.relay

    again = live.client.post(CONFIRM, {"token": token}, format="json")
    assert again.status_code == 400 and "token" in again.json()["error"]["details"]


def test_a_form_post_answers_a_page(live):
    _add(live.account, "carol@example.org")
    token = _mailed_token("carol@example.org")
    form = live.client.generic(
        "POST",
        CONFIRM,
        f"token={token}",
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="text/html",
    )
    assert form.status_code == 200 and b"Address confirmed" in form.content
    assert SenderIdentity.objects.get().status == "verified"
    used = live.client.generic(
        "POST",
        CONFIRM,
        f"token={token}",
        content_type="application/x-www-form-urlencoded",
        HTTP_ACCEPT="text/html,application/xhtml+xml",
    )
    assert used.status_code == 400 and used["Content-Type"].startswith("text/html")
    assert b"used" in used.content


def test_an_expired_link_fails_and_a_resent_one_replaces_it(live):
    identity_id = _add(live.account, "dave@example.org").json()["id"]
    old = _mailed_token("dave@example.org")
    too_soon = live.account.client.post(f"/api/sender-identities/{identity_id}/resend/")
    assert too_soon.status_code == 429 and "retry_after" in too_soon.json()["error"]["details"]

    past = timezone.now() - timedelta(hours=49)
    SenderIdentity.objects.filter(pk=identity_id).update(
        token_expires_at=past + timedelta(hours=48), confirmation_sent_at=past
    )
    expired = live.client.post(CONFIRM, {"token": old}, format="json")
    assert expired.status_code == 400 and "expired" in expired.json()["error"]["message"]
    assert b"expired" in live.client.get(f"{CONFIRM}?token={old}").content

    resent = live.account.client.post(f"/api/sender-identities/{identity_id}/resend/")
    assert resent.status_code == 200, resent.json()
    new = _mailed_token("dave@example.org")
    assert new != old
    assert OutboundMessage.objects.filter(recipients__rcpt_to="dave@example.org").count() == 2
    assert live.client.post(CONFIRM, {"token": old}, format="json").status_code == 400
    assert live.client.post(CONFIRM, {"token": new}, format="json").status_code == 200
    done = live.account.client.post(f"/api/sender-identities/{identity_id}/resend/")
    assert done.status_code == 409


def test_an_address_of_a_verified_domain_is_verified_at_once(live):
    reply = _add(live.account, "billing@acme.test")
    assert reply.status_code == 201 and reply.json()["status"] == "verified"
    assert not OutboundMessage.objects.exists()  # nothing to confirm, nothing mailed


def test_a_server_scoped_identity_sends_only_through_its_server(live):
    other = server_make(live.account, name="staging")
    reply = _add(live.account, "ops@example.org", server=other.server.pk)
    assert reply.status_code == 201 and reply.json()["server"] == other.server.pk
    live.client.post(CONFIRM, {"token": _mailed_token("ops@example.org")}, format="json")
    body = send_body(**{"from": "ops@example.org"})
    assert other.client.post("/api/email/", body, format="json").status_code == 200
    assert live.client.post("/api/email/", body, format="json").status_code == 422


def test_list_and_delete(live, other_account):
    first = _add(live.account, "e1@example.org").json()["id"]
    _add(live.account, "e2@example.org")
    listed = live.account.client.get("/api/sender-identities/?limit=1")
    assert listed.json()["count"] == 2 and len(listed.json()["results"]) == 1
    assert live.account.client.get(f"/api/sender-identities/{first}/").json()["id"] == first
    # Another account's id, unknown ids: not found.
    assert other_account.client.get(f"/api/sender-identities/{first}/").status_code == 404
    assert other_account.client.delete(f"/api/sender-identities/{first}/").status_code == 404
    assert other_account.client.post(f"/api/sender-identities/{first}/resend/").status_code == 404
    assert live.account.client.get("/api/sender-identities/999999/").status_code == 404
    assert live.account.client.delete(f"/api/sender-identities/{first}/").status_code == 204
    assert live.account.client.delete(f"/api/sender-identities/{first}/").status_code == 404
    assert live.account.client.get("/api/sender-identities/").json()["count"] == 1


def test_server_keys_cannot_manage_identities(live):
    for client in (live.client, live.full_client):
        assert client.get("/api/sender-identities/").status_code == 401
        reply = client.post("/api/sender-identities/", {"address": "x@example.org"}, format="json")
        assert reply.status_code == 401
    assert not SenderIdentity.objects.exists()


@pytest.mark.parametrize(
    "address",
    [
        "",
        " ",
        "no-at-sign",
        "a@b@c.test",
        "alice@gmail.com\r\nBcc: victim@x.test",
        "Alice <alice@gmail.com>",
        "a@x.test, b@x.test",
        "x" * 250 + "@x.test",
        "alice@",
        "@gmail.com",
        "al\x00ice@gmail.com",
    ],
)
def test_bad_addresses_are_400_naming_the_field(live, address):
    reply = _add(live.account, address)
    assert reply.status_code == 400, reply.content
    assert "address" in reply.json()["error"]["details"]
    assert not SenderIdentity.objects.exists() and not OutboundMessage.objects.exists()


def test_other_bad_bodies(live, other_account):
    theirs = server_make(other_account, name="theirs")
    for body, field in [
        ({}, "address"),
        ({"address": ["a@x.test"]}, "address"),
        ({"address": 5}, "address"),
        ({"address": "a@x.test", "name": "x" * 101}, "name"),
        ({"address": "a@x.test", "name": "two\r\nlines"}, "name"),
        ({"address": "a@x.test", "server": theirs.server.pk}, "server"),
        ({"address": "a@x.test", "server": "1; DROP TABLE"}, "server"),
        ({"address": "a@x.test", "server": 10**30}, "server"),
    ]:
        reply = live.account.client.post("/api/sender-identities/", body, format="json")
        assert reply.status_code == 400, (body, reply.content)
        assert field in reply.json()["error"]["details"], (body, reply.json())
    assert not SenderIdentity.objects.exists()
    assert _add(live.account, "dup@example.org").status_code == 201
    dup = _add(live.account, "DUP@example.org")
    assert dup.status_code == 409 and "address" in dup.json()["error"]["details"]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "mpi_",
        "mpi_" + "A" * 43,  # the right shape, never issued
        "mps_" + "A" * 43,  # a server key's shape
        "mpi_" + "A" * 42 + "'",
        "' OR 1=1 --",
        "mpi_" + "A" * 5000,
        "\u00e9" * 47,
    ],
)
def test_crafted_tokens_are_400_naming_the_token(live, token):
    _add(live.account, "f@example.org")
    reply = server_client("none").post(CONFIRM, {"token": token}, format="json")
    assert reply.status_code == 400, reply.content
    assert "token" in reply.json()["error"]["details"]
    page = server_client("none").get(CONFIRM, {"token": token}, HTTP_ACCEPT="text/html")
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")
    assert b"<script" not in page.content  # the token is never echoed unescaped
    api = server_client("none").get(CONFIRM, {"token": token})
    assert api.status_code == 400 and "token" in api.json()["error"]["details"]
    assert SenderIdentity.objects.get().status == "pending"


def test_confirm_without_a_token(db):
    from rest_framework.test import APIClient

    assert APIClient().get(CONFIRM).status_code == 400
    reply = APIClient().post(CONFIRM, {}, format="json")
    assert reply.status_code == 400 and "token" in reply.json()["error"]["details"]
    assert APIClient().post(CONFIRM, [1, 2], format="json").status_code == 400


def test_an_account_has_at_most_100_identities(live, monkeypatch):
    from mailplane.servers import identities

    monkeypatch.setattr(identities, "IDENTITIES_MAX", 2)
    assert _add(live.account, "g1@example.org").status_code == 201
    assert _add(live.account, "g2@example.org").status_code == 201
    third = _add(live.account, "g3@example.org")
    assert third.status_code == 403 and third.json()["error"]["code"] == "limit_reached"


def test_deleting_an_identity_stops_sending_from_it(live):
    identity_id = _add(live.account, "h@example.org").json()["id"]
    live.client.post(CONFIRM, {"token": _mailed_token("h@example.org")}, format="json")
    body = send_body(**{"from": "h@example.org"})
    assert live.client.post("/api/email/", body, format="json").status_code == 200
    live.account.client.delete(f"/api/sender-identities/{identity_id}/")
    assert live.client.post("/api/email/", body, format="json").status_code == 422


def test_confirmation_messages_are_capped_per_day(live, monkeypatch):
    """Adding and deleting cannot be used to mail strangers without end."""
    from mailplane.servers import identities

    monkeypatch.setattr(identities, "CONFIRMATIONS_PER_DAY", 2)
    for n in range(2):
        identity_id = _add(live.account, f"k{n}@example.org").json()["id"]
        live.account.client.delete(f"/api/sender-identities/{identity_id}/")
    capped = _add(live.account, "k9@example.org")
    assert capped.status_code == 403 and "address" in capped.json()["error"]["details"]
    assert not SenderIdentity.objects.exists()  # refused whole: no identity without its mail
