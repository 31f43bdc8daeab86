"""The webhook endpoints API, through both doors: an account key (/api/servers/{id}/
webhooks/, /api/webhooks/{id}/) and a server's full key (/api/server/webhooks/)."""

from __future__ import annotations

import json
import time

import pytest
from django.utils import timezone

from mailplane.core import crypto
from mailplane.webhooks.models import WebhookDelivery, WebhookEndpoint
from mailplane.webhooks.runner import WebhookWorker
from tests.support.servers import server_make
from tests.support.webhook_receiver import Answer
from tests.webhooks.conftest import Hooked, send

GOOD = {"url": "https://hooks.example.com/mailplane", "event_types": ["delivered", "bounced"]}


@pytest.fixture
def server(account):
    return server_make(account)


def _routes(server):
    """(client, list path, detail path template) for both doors."""
    return [
        (server.account.client, f"/api/servers/{server.server.pk}/webhooks/", "/api/webhooks/{}/"),
        (server.full_client, "/api/server/webhooks/", "/api/server/webhooks/{}/"),
    ]


@pytest.mark.parametrize("door", [0, 1])
def test_create_shows_the_secret_once_and_stores_it_encrypted(server, door):
    client, list_path, detail = _routes(server)[door]
    created = client.post(list_path, GOOD, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["event_types"] == ["delivered", "bounced"]
    stored = WebhookEndpoint.objects.get(pk=body["id"])
    assert body["secret"] not in stored.secret  # encrypted at rest
    assert crypto.decrypt(stored.secret) == body["secret"]
    shown = client.get(detail.format(body["id"]))
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    assert body["secret"] not in client.get(list_path).content.decode()
    assert client.get(list_path).json()["count"] == 1


@pytest.mark.parametrize("door", [0, 1])
def test_update_rotate_and_delete(server, door):
    client, list_path, detail = _routes(server)[door]
    created = client.post(list_path, GOOD, format="json").json()
    path = detail.format(created["id"])
    changed = client.patch(path, {"event_types": ["opened"], "enabled": False}, format="json")
    assert changed.status_code == 200
    assert (changed.json()["event_types"], changed.json()["enabled"]) == (["opened"], False)
    rotated = client.post(path + "rotate-secret/")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != created["secret"]
    stored = WebhookEndpoint.objects.get(pk=created["id"])
    assert crypto.decrypt(stored.previous_secret) == created["secret"]
    hours = (stored.previous_secret_expires_at - timezone.now()).total_seconds() / 3600
    assert 23.9 < hours <= 24
    assert client.get(path).json()["previous_secret_expires_at"] is not None
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404


BAD = [
    ({"url": "ftp://x.example/", "event_types": ["delivered"]}, "url"),
    ({"url": "http://169.254.169.254/", "event_types": ["delivered"]}, "url"),
    ({"url": "https://h.example/" + "x" * 3000, "event_types": ["delivered"]}, "url"),
    ({"url": "https://u:p@h.example/", "event_types": ["delivered"]}, "url"),
    ({"url": 42, "event_types": ["delivered"]}, "url"),
    ({"url": "https://h.example/", "event_types": ["delivered", "teleported"]}, "event_types"),
    ({"url": "https://h.example/", "event_types": []}, "event_types"),
    ({"url": "https://h.example/", "event_types": "delivered"}, "event_types"),
    ({"url": "https://h.example/", "event_types": [{"x": 1}]}, "event_types"),
    ({"url": "https://h.example/", "event_types": ["queued"] * 50}, "event_types"),
    ({"url": "https://h.example/", "event_types": ["queued"], "max_concurrency": 0},
     "max_concurrency"),
    ({"url": "https://h.example/", "event_types": ["queued"], "max_concurrency": 10**9},
     "max_concurrency"),
    ({"event_types": ["queued"]}, "url"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_input_is_400_naming_the_field(server, settings, body, field):
    settings.MAILPLANE = {**settings.MAILPLANE, "WEBHOOKS_ALLOW_PRIVATE": False}
    for client, list_path, _ in _routes(server):
        started = time.monotonic()
        reply = client.post(list_path, body, format="json")
        assert reply.status_code == 400, (body, reply.content)
        assert field in reply.json()["error"]["details"], reply.json()
        assert time.monotonic() - started < 2
    assert not WebhookEndpoint.objects.exists()


def test_a_huge_body_is_413(server):
    body = json.dumps({**GOOD, "description": "x" * (2 * 1024 * 1024)})
    reply = server.account.client.post(
        f"/api/servers/{server.server.pk}/webhooks/", body, content_type="application/json"
    )
    assert reply.status_code == 413


def test_a_send_only_key_may_not_manage_webhooks(server):
    reply = server.client.post("/api/server/webhooks/", GOOD, format="json")
    assert reply.status_code == 403
    assert server.client.get("/api/server/webhooks/").status_code == 403


def test_another_servers_endpoint_is_not_found_through_a_server_key(account):
    mine = server_make(account, name="mine")
    theirs = server_make(account, name="theirs")
    created = theirs.full_client.post("/api/server/webhooks/", GOOD, format="json").json()
    for method in ("get", "patch", "delete"):
        reply = getattr(mine.full_client, method)(
            f"/api/server/webhooks/{created['id']}/", {"enabled": False}, format="json"
        )
        assert reply.status_code == 404, reply.content
    for suffix in ("rotate-secret/", "replay/"):
        reply = mine.full_client.post(
            f"/api/server/webhooks/{created['id']}/{suffix}", {"delivery": 1}, format="json"
        )
        assert reply.status_code == 404
    attempts = mine.full_client.get(f"/api/server/webhooks/{created['id']}/attempts/")
    assert attempts.status_code == 404
    assert WebhookEndpoint.objects.get(pk=created["id"]).enabled


def test_the_endpoint_limit_per_server(server, monkeypatch):
    from mailplane.webhooks import services

    monkeypatch.setattr(services, "ENDPOINTS_PER_SERVER", 2)
    path = f"/api/servers/{server.server.pk}/webhooks/"
    for _ in range(2):
        assert server.account.client.post(path, GOOD, format="json").status_code == 201
    refused = server.account.client.post(path, GOOD, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "limit_reached"


def test_attempts_are_listed_and_deliveries_replayed(hooked: Hooked):
    hooked.receiver.script = lambda n, body: Answer(500, b"E" * 5000) if n == 0 else Answer()
    send(hooked)
    WebhookWorker().run_until_idle(timeout=20)
    client = hooked.live.full_client
    path = f"/api/server/webhooks/{hooked.endpoint.pk}/"
    attempts = client.get(path + "attempts/").json()
    assert attempts["count"] == 2
    newest, oldest = attempts["results"]
    assert (oldest["status_code"], newest["status_code"]) == (500, 200)
    assert len(oldest["response_excerpt"]) == 1024  # truncated
    assert oldest["type"] == "queued" and oldest["webhook_id"].startswith("msg_")
    assert newest["delivery_state"] == "delivered" and newest["latency_ms"] >= 0

    delivery = WebhookDelivery.objects.get()
    replayed = client.post(path + "replay/", {"delivery": delivery.pk}, format="json")
    assert replayed.status_code == 202 and replayed.json() == {"replayed": 1}
    WebhookWorker().run_until_idle(timeout=20)
    again = hooked.receiver.accepted()
    assert len(again) == 2
    assert again[0].headers["webhook-id"] == again[1].headers["webhook-id"]  # droppable

    # A time range, through the account door.
    send(hooked, to="dave@dest.test")
    WebhookWorker().run_until_idle(timeout=20)
    since = (timezone.now() - timezone.timedelta(hours=1)).isoformat()
    until = (timezone.now() + timezone.timedelta(minutes=1)).isoformat()
    ranged = hooked.live.account.client.post(
        f"/api/webhooks/{hooked.endpoint.pk}/replay/",
        {"since": since, "until": until},
        format="json",
    )
    assert ranged.json() == {"replayed": 2}
    WebhookWorker().run_until_idle(timeout=20)
    assert len(hooked.receiver.accepted()) == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": "2026-01-02T00:00:00Z"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "yesterday", "until": "2026-01-01T00:00:00Z"}, "since"),
        ({"delivery": 0}, "delivery"),
        ({"delivery": "x"}, "delivery"),
        ({"delivery": 1, "since": "2026-01-01T00:00:00Z"}, "delivery"),
    ],
)
def test_bad_replays_are_400_naming_the_field(hooked: Hooked, body, field):
    reply = hooked.live.full_client.post(
        f"/api/server/webhooks/{hooked.endpoint.pk}/replay/", body, format="json"
    )
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"]


def test_replaying_an_unknown_delivery_is_404(hooked: Hooked):
    reply = hooked.live.full_client.post(
        f"/api/server/webhooks/{hooked.endpoint.pk}/replay/", {"delivery": 999999}, format="json"
    )
    assert reply.status_code == 404
