"""Issue 9 item 1: embedded mode accepts domains under the reserved TLDs of RFC 2606/6761
as verified without DNS; real domains keep their checks; production mode accepts none."""

from __future__ import annotations

import pytest

from mailplane import config
from mailplane.domains.verification import reserved_tld


@pytest.fixture
def embedded(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "ACCEPT_RESERVED_DOMAINS": True}


@pytest.fixture
def production(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "ACCEPT_RESERVED_DOMAINS": False}


def _create(account, name, **extra):
    response = account.client.post("/api/domains/", {"name": name, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.parametrize(
    ("name", "tld"),
    [
        ("acme.test", "test"),
        ("mail.Shop.EXAMPLE", "example"),
        ("a.localhost", "localhost"),
        ("x.invalid.", "invalid"),
        ("example.com", None),  # RFC 2606's example.com is a real, served zone
        ("test.com", None),
        ("acme.testing", None),
    ],
)
def test_reserved_tld(name, tld):
    assert reserved_tld(name) == tld


@pytest.mark.parametrize("name", ["acme.test", "shop.example", "dev.localhost", "x.invalid"])
def test_embedded_reserved_domain_is_verified_and_says_why(account, dns_server, embedded, name):
    body = _create(account, name)
    assert body["verification_state"] == "verified"
    assert body["verified_at"] is not None
    assert "without DNS lookups" in body["verification_detail"]
    assert "reserved" in body["verification_detail"]
    assert "production mode checks every domain" in body["verification_detail"]
    assert {r["status"] for r in body["records"]} == {"ok"}
    assert all("without DNS lookups" in r["detail"] for r in body["records"])
    # No DNS record was published, and no query was even needed.
    again = account.client.post(f"/api/domains/{body['id']}/verify/").json()
    assert again["verification_state"] == "verified"
    assert dns_server.queries == []
    # A mailbox can be created at once.
    response = account.client.post(
        "/api/mailboxes/", {"email": "alice", "domain": body["id"]}, format="json"
    )
    assert response.status_code == 202, response.content


def test_embedded_real_domain_keeps_real_checks(account, dns_server, embedded):
    body = _create(account, "acme-real.com")
    assert body["verification_state"] == "dns_pending"
    assert "not verified yet" in body["verification_detail"]
    checked = account.client.post(f"/api/domains/{body['id']}/verify/").json()
    assert checked["verification_state"] == "dns_pending"
    assert {r["status"] for r in checked["records"]} == {"missing"}
    assert dns_server.queries, "the real domain was not looked up"
    response = account.client.post(
        "/api/mailboxes/", {"email": "alice", "domain": body["id"]}, format="json"
    )
    assert response.status_code == 400
    assert "not verified" in response.json()["error"]["details"]["domain"][0]


def test_production_checks_reserved_names_too(account, dns_server, production):
    body = _create(account, "acme.test")
    assert body["verification_state"] == "dns_pending"
    assert {r["status"] for r in body["records"]} == {"pending"}
    checked = account.client.post(f"/api/domains/{body['id']}/verify/").json()
    assert checked["verification_state"] == "dns_pending"
    assert {r["status"] for r in checked["records"]} == {"missing"}


@pytest.mark.parametrize(
    ("env", "accepted"),
    [
        ({}, True),  # embedded: no DATABASE_URL
        ({"DATABASE_URL": "postgres://u@db/mailplane"}, False),  # production
        ({"DATABASE_URL": "postgres://u@db/m", "MAILPLANE_ACCEPT_RESERVED_DOMAINS": "1"}, True),
        ({"MAILPLANE_ACCEPT_RESERVED_DOMAINS": "0"}, False),
    ],
)
def test_default_follows_the_mode(monkeypatch, env, accepted):
    for name in ("DATABASE_URL", "MAILPLANE_ACCEPT_RESERVED_DOMAINS", "PYTEST_VERSION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.accept_reserved_domains() is accepted


def test_relay_server_defaults_to_the_accounts_only_one(account, embedded):
    body = _create(account, "solo.test")
    assert body["relay_server"] == account.relay.pk


def test_relay_server_required_when_ambiguous(account, make_account, embedded):
    from mailplane.relays.models import RelayServer

    RelayServer.objects.create(
        organization=account.org, name="second", provider=account.relay.provider
    )
    response = account.client.post("/api/domains/", {"name": "two.test"}, format="json")
    assert response.status_code == 400
    assert "several relay servers" in response.json()["error"]["details"]["relay_server"][0]
