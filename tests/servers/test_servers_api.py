"""/api/servers/… with the account key; /api/server/ with a server key: what seed 004
describes (fields, streams, plan limits, keys shown once, deletion) and what a key of
either kind can and cannot reach."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from mailplane.queue.models import DeliveryEvent, OutboundMessage, QueuedRecipient
from mailplane.servers.models import EmailServer, MessageStream, ServerKey, ServerMessage
from tests.support.fixtures import verified_domain
from tests.support.servers import send_body, server_client, server_make


def test_a_server_is_created_with_its_three_streams(account):
    reply = account.client.post(
        "/api/servers/",
        {"name": "my-app-production", "color": "#1e90ff", "auto_suppress_complaints": False},
        format="json",
    )
    assert reply.status_code == 201, reply.json()
    body = reply.json()
    assert body["name"] == "my-app-production"
    assert body["color"] == "#1e90ff"
    assert body["default_stream"] == "outbound"
    assert (body["auto_suppress_bounces"], body["auto_suppress_complaints"]) == (True, False)
    assert body["sandbox"] is False  # a pro account sends for real
    assert [(s["stream_id"], s["kind"]) for s in body["streams"]] == [
        ("outbound", "transactional"),
        ("broadcast", "broadcast"),
        ("inbound", "inbound"),
    ]
    listed = account.client.get("/api/servers/").json()
    assert listed["count"] == 1 and listed["results"][0] == body
    assert account.client.get(f"/api/servers/{body['id']}/").json() == body


def test_changing_a_server(account):
    server = account.client.post("/api/servers/", {"name": "a"}, format="json").json()
    path = f"/api/servers/{server['id']}/"
    changed = account.client.patch(
        path, {"name": "b", "default_stream": "broadcast", "sandbox": True}, format="json"
    ).json()
    assert (changed["name"], changed["default_stream"], changed["sandbox"]) == (
        "b",
        "broadcast",
        True,
    )
    for body, field in [
        ({"default_stream": "nope"}, "default_stream"),
        ({"color": "red"}, "color"),
        ({"color": "#12345g"}, "color"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"sandbox": "perhaps"}, "sandbox"),
        ({"auto_suppress_bounces": [True]}, "auto_suppress_bounces"),
    ]:
        reply = account.client.patch(path, body, format="json")
        assert reply.status_code == 400, (body, reply.content)
        assert field in reply.json()["error"]["details"], (body, reply.json())
    account.client.post("/api/servers/", {"name": "c"}, format="json")
    clash = account.client.patch(path, {"name": "c"}, format="json")
    assert clash.status_code == 409
    assert "name" in clash.json()["error"]["details"]


@pytest.mark.parametrize(("plan", "allowed"), [("starter", 1), ("pro", 5)])
def test_plan_limits(make_account, plan, allowed):
    account = make_account(plan=plan)
    for n in range(allowed):
        assert (
            account.client.post("/api/servers/", {"name": f"s{n}"}, format="json").status_code
            == 201
        )
    over = account.client.post("/api/servers/", {"name": "one-more"}, format="json")
    assert over.status_code == 403
    assert over.json()["error"]["code"] == "limit_reached"
    assert EmailServer.objects.filter(organization=account.org).count() == allowed


def test_enterprise_has_no_server_limit(make_account):
    account = make_account(plan="enterprise")
    for n in range(7):
        assert (
            account.client.post("/api/servers/", {"name": f"s{n}"}, format="json").status_code
            == 201
        )


def test_a_starter_account_gets_a_sandbox_server_only(make_account):
    account = make_account(plan="starter")
    refused = account.client.post(
        "/api/servers/", {"name": "live", "sandbox": False}, format="json"
    )
    assert refused.status_code == 403
    assert "sandbox" in refused.json()["error"]["details"]
    server = account.client.post("/api/servers/", {"name": "try-it"}, format="json").json()
    assert server["sandbox"] is True
    still = account.client.patch(f"/api/servers/{server['id']}/", {"sandbox": False}, format="json")
    assert still.status_code == 403
    assert EmailServer.objects.get(pk=server["id"]).sandbox is True


def test_a_duplicate_name_is_409(account):
    account.client.post("/api/servers/", {"name": "same"}, format="json")
    reply = account.client.post("/api/servers/", {"name": "same"}, format="json")
    assert reply.status_code == 409
    assert "name" in reply.json()["error"]["details"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": None}, "name"),
        ({"name": ["a"]}, "name"),
        ({"name": {"nested": {"deep": 1}}}, "name"),
        ({"name": "x" * 5000}, "name"),
        ({"name": "ok", "color": "#" + "f" * 5000}, "color"),
        ({"name": "ok", "default_stream": 7}, "default_stream"),
        ({"name": "ok", "default_stream": "missing"}, "default_stream"),
        ({"name": "ok", "sandbox": {"a": 1}}, "sandbox"),
    ],
)
def test_hostile_server_bodies_are_400_naming_the_field(account, body, field):
    reply = account.client.post("/api/servers/", body, format="json")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"]
    assert not EmailServer.objects.exists()


@pytest.mark.parametrize(
    "raw", [b"[]", b'"x"', b"{", b"[" * 3000 + b"]" * 3000, b'{"name": "\\u0000"}']
)
def test_hostile_raw_bodies_are_4xx(account, raw):
    reply = account.client.post("/api/servers/", raw, content_type="application/json")
    assert 400 <= reply.status_code < 500
    assert set(reply.json()["error"]) == {"code", "message", "details"}


def test_keys_are_shown_once_and_stored_as_digests(account):
    server = account.client.post("/api/servers/", {"name": "app"}, format="json").json()
    path = f"/api/servers/{server['id']}/keys/"
    made = account.client.post(path, {"name": "ci"}, format="json")
    assert made.status_code == 201
    issued = made.json()
    assert issued["kind"] == "send_only"
    assert issued["key"].startswith("mps_") and issued["prefix"] == issued["key"][:10]
    full = account.client.post(path, {"kind": "full"}, format="json").json()
    assert full["kind"] == "full"
    listed = account.client.get(path).json()
    assert listed["count"] == 2
    assert all("key" not in k for k in listed["results"])
    stored = ServerKey.objects.get(pk=issued["id"])
    assert stored.key_digest.startswith("sha256:")
    with connection.cursor() as cursor:  # the clear key is in no column of the table
        cursor.execute(f"SELECT * FROM {ServerKey._meta.db_table}")
        assert issued["key"] not in repr(cursor.fetchall())
    for body, field in [
        ({"kind": "admin"}, "kind"),
        ({"name": "x" * 101}, "name"),
        ({"kind": []}, "kind"),
    ]:
        reply = account.client.post(path, body, format="json")
        assert reply.status_code == 400 and field in reply.json()["error"]["details"]
    assert account.client.delete(f"/api/server-keys/{issued['id']}/").status_code == 204
    assert account.client.delete(f"/api/server-keys/{issued['id']}/").status_code == 404
    assert server_client(issued["key"]).get("/api/server/").status_code == 401


def test_a_send_only_key_sends_and_nothing_else(account):
    verified_domain(account, "acme.test")
    access = server_make(account)
    assert access.client.get("/api/server/").status_code == 403
    assert access.client.patch("/api/server/", {"name": "x"}, format="json").status_code == 403
    assert access.client.post("/api/email/", send_body(), format="json").status_code == 200
    own = access.full_client.get("/api/server/")
    assert own.status_code == 200 and own.json()["id"] == access.server.pk
    changed = access.full_client.patch("/api/server/", {"color": "#000000"}, format="json")
    assert changed.json()["color"] == "#000000"
    bad = access.full_client.patch("/api/server/", {"default_stream": "x"}, format="json")
    assert bad.status_code == 400 and "default_stream" in bad.json()["error"]["details"]


ACCOUNT_PATHS = [
    "/api/userinfo/",
    "/api/servers/",
    "/api/api-keys/",
    "/api/messages/",
    "/api/domains/",
]


@pytest.mark.parametrize("path", ACCOUNT_PATHS)
def test_a_server_key_never_reaches_the_account_endpoints(account, path):
    access = server_make(account)
    for client in (access.full_client, _api_key_client(access.full_key)):
        reply = client.get(path)
        assert reply.status_code == 401, (path, reply.content)


def _api_key_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def test_deleting_a_server_removes_its_streams_keys_and_messages_and_nothing_else(account):
    verified_domain(account, "acme.test")
    doomed = server_make(account, "doomed")
    kept = server_make(account, "kept")
    gone = doomed.client.post("/api/email/", send_body(subject="gone"), format="json").json()
    stays = kept.client.post("/api/email/", send_body(subject="stays"), format="json").json()
    assert account.client.delete(f"/api/servers/{doomed.server.pk}/").status_code == 204
    assert account.client.get(f"/api/servers/{doomed.server.pk}/").status_code == 404
    assert not MessageStream.objects.filter(server_id=doomed.server.pk).exists()
    assert not ServerKey.objects.filter(server_id=doomed.server.pk).exists()
    assert not OutboundMessage.objects.filter(pk=gone["id"]).exists()
    assert not QueuedRecipient.objects.filter(message_id=gone["id"]).exists()
    assert not DeliveryEvent.objects.filter(message_id=gone["id"]).exists()
    assert doomed.client.post("/api/email/", send_body(), format="json").status_code == 401
    # The other server: untouched.
    assert OutboundMessage.objects.filter(pk=stays["id"]).exists()
    assert ServerMessage.objects.filter(server=kept.server).count() == 1
    assert MessageStream.objects.filter(server=kept.server).count() == 3
    assert kept.client.post("/api/email/", send_body(), format="json").status_code == 200


def test_server_names_are_per_account(account, other_account):
    """Another account's server name is free here: a 409 would tell it exists."""
    assert account.client.post("/api/servers/", {"name": "prod"}, format="json").status_code == 201
    reply = other_account.client.post("/api/servers/", {"name": "prod"}, format="json")
    assert reply.status_code == 201
