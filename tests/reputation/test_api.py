"""Caps and pause through the API: set on servers and keys, validated (hostile values are
400 naming the field, never 500), shown with `paused_at`/`paused_reason`, and in the
OpenAPI schema as they behave."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from mailplane.reputation.pause import owner_pause
from mailplane.servers.models import ServerKey
from tests.support.openapi import api_schema
from tests.support.servers import server_make


@pytest.fixture
def live(account: Any) -> Any:
    return server_make(account)


def test_caps_are_set_and_shown_on_servers_and_keys(account: Any, live: Any) -> None:
    url = f"/api/servers/{live.server.pk}/"
    reply = account.client.patch(url, {"hourly_cap": 100, "daily_cap": 1000}, format="json")
    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert (body["hourly_cap"], body["daily_cap"], body["paused_at"]) == (100, 1000, None)
    made = account.client.post(
        f"/api/servers/{live.server.pk}/keys/",
        {"name": "bulk", "hourly_cap": 10, "cap_mode": "refuse"},
        format="json",
    )
    assert made.status_code == 201, made.content
    key = made.json()
    assert (key["hourly_cap"], key["daily_cap"], key["cap_mode"]) == (10, None, "refuse")
    changed = account.client.patch(
        f"/api/server-keys/{key['id']}/", {"daily_cap": 50, "cap_mode": "hold"}, format="json"
    )
    assert changed.status_code == 200, changed.content
    assert (changed.json()["daily_cap"], changed.json()["cap_mode"]) == (50, "hold")
    cleared = account.client.patch(
        f"/api/server-keys/{key['id']}/", {"hourly_cap": None}, format="json"
    )
    assert cleared.status_code == 200 and cleared.json()["hourly_cap"] is None
    # A full server key sets its own server's caps too (PATCH /api/server/).
    own = live.full_client.patch("/api/server/", {"hourly_cap": 7}, format="json")
    assert own.status_code == 200 and own.json()["hourly_cap"] == 7


HOSTILE = [
    ({"hourly_cap": 0}, "hourly_cap"),
    ({"hourly_cap": -5}, "hourly_cap"),
    ({"daily_cap": 10**12}, "daily_cap"),
    ({"daily_cap": "lots"}, "daily_cap"),
    ({"hourly_cap": 1.5}, "hourly_cap"),
    ({"hourly_cap": True}, "hourly_cap"),
    ({"hourly_cap": [1]}, "hourly_cap"),
    ({"hourly_cap": {"a": 1}}, "hourly_cap"),
    ({"hourly_cap": 10, "daily_cap": 5}, "hourly_cap"),
]


@pytest.mark.parametrize(("body", "field"), HOSTILE)
def test_hostile_server_caps_are_400_naming_the_field(
    account: Any, live: Any, body: dict[str, Any], field: str
) -> None:
    reply = account.client.patch(f"/api/servers/{live.server.pk}/", body, format="json")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"]


@pytest.mark.parametrize(
    ("body", "field"),
    [*HOSTILE, ({"cap_mode": "explode"}, "cap_mode"), ({"cap_mode": None}, "cap_mode")],
)
def test_hostile_key_caps_are_400_naming_the_field(
    account: Any, live: Any, body: dict[str, Any], field: str
) -> None:
    key = ServerKey.objects.get(server=live.server, name="send")
    reply = account.client.patch(f"/api/server-keys/{key.pk}/", body, format="json")
    assert reply.status_code == 400, reply.content
    assert field in reply.json()["error"]["details"]
    made = account.client.post(f"/api/servers/{live.server.pk}/keys/", body, format="json")
    assert made.status_code == 400, made.content
    assert field in made.json()["error"]["details"]


def test_a_daily_cap_under_the_stored_hourly_one_is_refused(account: Any, live: Any) -> None:
    url = f"/api/servers/{live.server.pk}/"
    assert account.client.patch(url, {"hourly_cap": 10}, format="json").status_code == 200
    reply = account.client.patch(url, {"daily_cap": 5}, format="json")
    assert reply.status_code == 400
    assert "daily_cap" in reply.json()["error"]["details"]


def test_pause_fields_are_read_only(account: Any, live: Any) -> None:
    owner_pause(owner=live.server, reason="bounces", now=timezone.now())
    url = f"/api/servers/{live.server.pk}/"
    reply = account.client.patch(url, {"paused_at": None, "paused_reason": ""}, format="json")
    assert reply.status_code == 200  # unknown fields are ignored by the serializer …
    shown = account.client.get(url).json()
    assert shown["paused_at"] is not None and shown["paused_reason"] == "bounces"  # … kept
    key = ServerKey.objects.get(server=live.server, name="send")
    patched = account.client.patch(
        f"/api/server-keys/{key.pk}/", {"paused_at": None}, format="json"
    )
    assert patched.status_code == 200


def test_the_schema_says_what_the_caps_and_pause_do() -> None:
    schema = api_schema()
    schemas = schema["components"]["schemas"]
    for name in ("EmailServer", "ServerKey"):
        props = schemas[name]["properties"]
        assert {"hourly_cap", "daily_cap", "paused_at", "paused_reason"} <= set(props), name
        assert props["paused_at"].get("description"), name
    assert "cap_mode" in schemas["ServerKey"]["properties"]
    write = schemas["PatchedEmailServerWriteRequest"]["properties"]
    assert write["hourly_cap"]["minimum"] == 1 and write["hourly_cap"].get("nullable")
    key_patch = schema["paths"]["/api/server-keys/{id}/"]["patch"]
    assert "200" in key_patch["responses"]
    send = schema["paths"]["/api/email/"]["post"]["responses"]
    assert {"403", "429"} <= set(send)
    assert "Retry-After" in send["429"]["description"]
    assert "/api/reputation-notices/" in schema["paths"]
