"""GoDaddyClient against the local GoDaddy Domains API stand-in: sso-key auth, RRset
writes that keep other records, paging, error bodies and rate limiting."""

from __future__ import annotations

import time

import pytest

from mailplane.dnsproviders.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RecordRejected,
    ZoneNotFound,
)
from mailplane.dnsproviders.godaddy import GoDaddyClient, relative_name
from mailplane.dnsproviders.http import RetryPolicy
from mailplane.dnsproviders.interface import RecordSpec, Zone
from tests.support.dns_providers import GD_KEY, GD_SECRET

FAST = RetryPolicy(attempts=3, max_wait=2.0, backoff=0.01)
ZONE = Zone(id="acme.test", name="acme.test")


@pytest.fixture
def client(fake_godaddy):
    fake_godaddy.add_domain("acme.test")
    made = GoDaddyClient(
        api_key=GD_KEY, api_secret=GD_SECRET, base_url=fake_godaddy.base_url, policy=FAST, timeout=5
    )
    yield made
    made.close()


def _client(fake, key=GD_KEY, secret=GD_SECRET):
    return GoDaddyClient(
        api_key=key, api_secret=secret, base_url=fake.base_url, policy=FAST, timeout=5
    )


def test_verify_sends_sso_key_and_makes_one_cheap_call(fake_godaddy, client):
    assert client.verify_credentials() == "GoDaddy API key and secret accepted"
    (call,) = fake_godaddy.requests
    assert (call.method, call.path, call.param("limit")) == ("GET", "/v1/domains", "1")
    assert call.headers["Authorization"] == f"sso-key {GD_KEY}:{GD_SECRET}"


def test_bad_and_denied_keys_are_rejected_with_godaddys_message(fake_godaddy):
    with pytest.raises(
        CredentialsRejected,
        match=r"Could not authenticate API key/secret \(code UNABLE_TO_AUTHENTICATE\)",
    ):
        _client(fake_godaddy, secret="wrong_secret_123").verify_credentials()
    fake_godaddy.add_account("denied_key_123", "denied_secret_123", denied=True)
    with pytest.raises(
        CredentialsRejected, match=r"ACCESS_DENIED.*open only to some account kinds"
    ):
        _client(fake_godaddy, "denied_key_123", "denied_secret_123").verify_credentials()
    assert [r.status for r in fake_godaddy.requests] == [401, 403]


def test_find_zone_walks_up_and_unknown_domains_are_zone_not_found(fake_godaddy, client):
    assert client.find_zone("mail.acme.test") == ZONE
    assert [r.path for r in fake_godaddy.requests] == [
        "/v1/domains/mail.acme.test",
        "/v1/domains/acme.test",
    ]
    with pytest.raises(ZoneNotFound, match=r"no GoDaddy domain for other\.test"):
        client.find_zone("other.test")
    with pytest.raises(ZoneNotFound, match="UNKNOWN_DOMAIN"):
        client.list_records(Zone(id="gone.test", name="gone.test"), name="gone.test", type="TXT")


def test_names_are_zone_relative():
    assert relative_name("acme.test", ZONE) == "@"
    assert relative_name("_dmarc.acme.test", ZONE) == "_dmarc"
    with pytest.raises(RecordRejected, match="not inside"):
        relative_name("evilacme.test", ZONE)


def test_create_adds_beside_existing_records(fake_godaddy, client):
    fake_godaddy.add_record("acme.test", type="MX", name="@", data="backup.other.test", priority=50)
    made = client.create_record(
        ZONE, RecordSpec("MX", "acme.test", "MX.Platform.Test", 10), comment="ignored"
    )
    (patch,) = fake_godaddy.writes
    assert (patch.method, patch.path) == ("PATCH", "/v1/domains/acme.test/records")
    assert patch.json == [
        {"type": "MX", "name": "@", "data": "mx.platform.test", "ttl": 600, "priority": 10}
    ]
    assert made.content == "mx.platform.test" and made.name == "acme.test"
    found = client.list_records(ZONE, name="acme.test", type="MX")
    assert sorted((r.priority, r.content) for r in found) == [
        (10, "mx.platform.test"),
        (50, "backup.other.test"),
    ]


def test_update_and_delete_rewrite_the_rrset_keeping_other_records_as_they_were(
    fake_godaddy, client
):
    fake_godaddy.add_records(
        "acme.test",
        [
            {"type": "TXT", "name": "@", "data": "google-site-verification=abc", "ttl": 3600},
            {"type": "TXT", "name": "@", "data": "v=spf1 include:old.test ~all", "ttl": 600},
        ],
    )
    (spf,) = [
        r
        for r in client.list_records(ZONE, name="acme.test", type="TXT")
        if r.content.startswith("v=spf1")
    ]
    client.update_record(
        ZONE, spf, RecordSpec("TXT", "acme.test", "v=spf1 include:new.test ~all"), comment=None
    )
    put = fake_godaddy.writes[-1]
    assert (put.method, put.path) == ("PUT", "/v1/domains/acme.test/records/TXT/@")
    assert put.json == [
        {"data": "google-site-verification=abc", "ttl": 3600},
        {"data": "v=spf1 include:new.test ~all", "ttl": 600},
    ]
    (spf,) = [
        r
        for r in client.list_records(ZONE, name="acme.test", type="TXT")
        if r.content.startswith("v=spf1")
    ]
    client.delete_record(ZONE, spf)
    assert fake_godaddy.writes[-1].json == [{"data": "google-site-verification=abc", "ttl": 3600}]
    (site,) = client.list_records(ZONE, name="acme.test", type="TXT")
    client.delete_record(ZONE, site)
    assert (fake_godaddy.writes[-1].method, fake_godaddy.writes[-1].path) == (
        "DELETE",
        "/v1/domains/acme.test/records/TXT/@",
    )
    assert fake_godaddy.zone_records("acme.test") == []
    writes = len(fake_godaddy.writes)
    client.delete_record(ZONE, site)  # already gone: no write at all
    assert len(fake_godaddy.writes) == writes


def test_a_full_zone_listing_follows_the_pages(fake_godaddy, client):
    fake_godaddy.add_records(
        "acme.test",
        [{"type": "A", "name": f"host{i}", "data": f"192.0.2.{i % 250}"} for i in range(1203)],
    )
    fake_godaddy.add_record("acme.test", type="CNAME", name="bounces", data="rp.platform.test")
    found = client.list_records(ZONE, name="bounces.acme.test")  # any type: the whole zone
    assert [(r.type, r.content) for r in found] == [("CNAME", "rp.platform.test")]
    pages = [r for r in fake_godaddy.requests if r.path == "/v1/domains/acme.test/records"]
    assert [(r.param("offset"), r.param("limit")) for r in pages] == [
        ("1", "500"),
        ("2", "500"),
        ("3", "500"),
    ]


def test_validation_errors_name_the_field(fake_godaddy, client):
    with pytest.raises(
        RecordRejected, match=r"INVALID_BODY.*records\[0\]\.name: a CNAME cannot be at the apex"
    ):
        client.create_record(ZONE, RecordSpec("CNAME", "acme.test", "elsewhere.test"), comment="")
    client.create_record(ZONE, RecordSpec("TXT", "acme.test", "hello"), comment="")
    with pytest.raises(RecordRejected, match="same attributes already exists"):
        client.create_record(ZONE, RecordSpec("TXT", "acme.test", "hello"), comment="")


def test_429_waits_for_retry_after_sec_from_the_body(fake_godaddy, client):
    fake_godaddy.force(
        429,
        {
            "code": "TOO_MANY_REQUESTS",
            "message": "Too many requests received within interval",
            "retryAfterSec": 1,
        },
    )
    started = time.monotonic()
    assert client.list_records(ZONE, name="acme.test", type="TXT") == []
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in fake_godaddy.requests] == [429, 200]


def test_429_with_a_long_wait_is_reported_not_slept(fake_godaddy, client):
    fake_godaddy.force(
        429, {"code": "TOO_MANY_REQUESTS", "message": "slow down", "retryAfterSec": 45}
    )
    with pytest.raises(ProviderUnavailable, match="wait 45 s"):
        client.create_record(ZONE, RecordSpec("TXT", "acme.test", "hello"), comment="")
    assert fake_godaddy.zone_records("acme.test") == []


def test_5xx_on_a_patch_is_not_repeated_but_on_a_put_it_is(fake_godaddy, client):
    fake_godaddy.force(500, {"code": "INTERNAL_SERVER_ERROR", "message": "Internal server error"})
    with pytest.raises(ProviderUnavailable, match="HTTP 500"):
        client.create_record(ZONE, RecordSpec("TXT", "acme.test", "hello"), comment="")
    assert [r.method for r in fake_godaddy.requests] == ["PATCH"]
    fake_godaddy.add_record("acme.test", type="TXT", name="@", data="old")
    (old,) = client.list_records(ZONE, name="acme.test", type="TXT")
    fake_godaddy.force(504, {"code": "GATEWAY_TIMEOUT", "message": "timeout"}, method="PUT")
    client.update_record(ZONE, old, RecordSpec("TXT", "acme.test", "new"), comment=None)
    assert [r["data"] for r in fake_godaddy.zone_records("acme.test")] == ["new"]
