"""Relay servers: listed per account, validated per provider, credentials never in clear."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from mailplane.relays.models import RelayServer
from mailplane.relays.services import relay_server_create


def _mailgun(account):
    return relay_server_create(
        organization=account.org,
        name="mg",
        provider="mailgun",
        configuration={"domain": "mg.acme.test", "region": "eu"},
        credentials={"api_key": "key-1234567890abcdef"},
    )


def test_list_shows_only_own_servers_with_masked_credentials(account, other_account):
    server = _mailgun(account)
    listing = account.client.get("/api/relay-servers/").json()["results"]
    assert [s["provider"] for s in listing] == ["missioninbox", "mailgun"]
    shown = next(s for s in listing if s["id"] == server.pk)
    assert shown["configuration"] == {"domain": "mg.acme.test", "region": "eu"}
    assert shown["credentials"] == {"api_key": "****cdef"}
    assert "key-1234567890abcdef" not in json.dumps(listing)
    assert server.pk not in [
        s["id"] for s in other_account.client.get("/api/relay-servers/").json()["results"]
    ]


def test_credentials_are_encrypted_at_rest(account):
    server = _mailgun(account)
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM relays_relayserver WHERE id = %s", [server.pk])
        (stored,) = cursor.fetchone()
    assert "key-1234567890abcdef" not in stored
    assert "api_key" not in stored
    assert RelayServer.objects.get(pk=server.pk).credentials == {"api_key": "key-1234567890abcdef"}


def test_update_merges_credentials_and_validates(account):
    server = _mailgun(account)
    url = f"/api/relay-servers/{server.pk}/"
    ok = account.client.patch(
        url,
        {"credentials": {"api_key": "key-new-0000000000zz"}, "configuration": {"region": "us"}},
        format="json",
    )
    assert ok.status_code == 200, ok.content
    assert ok.json()["configuration"] == {"domain": "mg.acme.test", "region": "us"}
    server.refresh_from_db()
    assert server.credentials == {"api_key": "key-new-0000000000zz"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"configuration": {"region": "mars"}}, "configuration.region"),
        ({"configuration": {"nonsense": 1}}, "configuration.nonsense"),
        ({"configuration": {"domain": None}}, "configuration.domain"),
        ({"credentials": {"api_key": ""}}, "credentials.api_key"),
        ({"credentials": {"api_key": None}}, "credentials.api_key"),
        ({"status": "sleeping"}, "status"),
        ({"configuration": "not-an-object"}, "configuration"),
    ],
)
def test_invalid_updates_name_the_field_and_change_nothing(account, body, field):
    server = _mailgun(account)
    response = account.client.patch(f"/api/relay-servers/{server.pk}/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]
    server.refresh_from_db()
    assert server.configuration == {"domain": "mg.acme.test", "region": "eu"}
    assert server.credentials == {"api_key": "key-1234567890abcdef"}


def test_native_server_settings_validated(account):
    url = f"/api/relay-servers/{account.relay.pk}/"
    good = {
        "configuration": {
            "helo_name": "mta1.acme.test",
            "source_address": "127.0.0.9",
            "max_connections_per_domain": 4,
        }
    }
    assert account.client.patch(url, good, format="json").status_code == 200
    bad = account.client.patch(
        url, {"configuration": {"source_address": "999.1.1.1"}}, format="json"
    )
    assert "configuration.source_address" in bad.json()["error"]["details"]


def test_sendgrid_and_smtp_schemas():
    from mailplane.core.errors import ValidationFailed
    from mailplane.relays.schemas import validate_provider_config

    assert validate_provider_config("sendgrid", {}, {"api_key": "SG.x"}) == (
        {},
        {"api_key": "SG.x"},
    )
    with pytest.raises(ValidationFailed) as err:
        validate_provider_config("smtp", {"host": "smtp.x.test"}, {})
    assert "configuration.port" in err.value.details
    with pytest.raises(ValidationFailed) as err:
        validate_provider_config("pigeon", {}, {})
    assert "provider" in err.value.details


@pytest.mark.parametrize(
    ("provider", "configuration", "credentials"),
    [
        ("missioninbox", {"max_connections_per_domain": 3}, {}),
        ("mailgun", {"domain": "mg.acme.test", "max_connections_per_domain": 8}, {"api_key": "k"}),
        ("sendgrid", {"max_connections_per_domain": 2}, {"api_key": "SG.x"}),
        (
            "smtp",
            {
                "host": "relay.isp.test",
                "port": 587,
                "tls_mode": "starttls",
                "tls_verify": False,
                "helo_name": "mta.acme.test",
                "max_connections_per_domain": 10,
            },
            {"username": "u", "password": "p"},
        ),
    ],
)
def test_every_setting_the_delivery_code_reads_is_accepted(provider, configuration, credentials):
    from mailplane.delivery.providers import provider_for
    from mailplane.relays.schemas import validate_provider_config

    config, creds = validate_provider_config(provider, configuration, credentials)
    assert config == configuration
    built = provider_for(provider=provider, configuration=config, credentials=creds)
    assert built.max_connections_per_domain == configuration["max_connections_per_domain"]
    if provider == "smtp":
        assert built.options.validate_certs is False  # type: ignore[attr-defined]
        assert built.options.helo_name == "mta.acme.test"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("provider", "configuration", "credentials", "field"),
    [
        ("missioninbox", {"max_connections_per_domain": 0}, {}, "max_connections_per_domain"),
        ("mailgun", {"domain": "mg.x.test", "max_connections_per_domain": 500}, {"api_key": "k"},
         "max_connections_per_domain"),
        ("sendgrid", {"max_connections_per_domain": True}, {"api_key": "k"},
         "max_connections_per_domain"),
        ("smtp", {"host": "r.test", "port": 25, "tls_verify": "no"}, {}, "tls_verify"),
        ("smtp", {"host": "r.test", "port": 25, "helo_name": "not a host"}, {}, "helo_name"),
    ],
)  # fmt: skip
def test_delivery_settings_are_validated(provider, configuration, credentials, field):
    from mailplane.core.errors import ValidationFailed
    from mailplane.relays.schemas import validate_provider_config

    with pytest.raises(ValidationFailed) as err:
        validate_provider_config(provider, configuration, credentials)
    assert list(err.value.details) == [f"configuration.{field}"]


def test_smarthost_auth_needs_username_and_password(account):
    from mailplane.core.errors import ValidationFailed
    from mailplane.relays.schemas import validate_provider_config

    with pytest.raises(ValidationFailed) as err:
        validate_provider_config("smtp", {"host": "r.test", "port": 587}, {"username": "u"})
    assert list(err.value.details) == ["credentials.password"]
