"""CloudflareClient against the local Cloudflare API stand-in: documented requests,
replies, error envelopes, pagination and rate limiting."""

from __future__ import annotations

import time

import pytest

from mailplane.dnsproviders.cloudflare import CloudflareClient, txt_quote, txt_unquote
from mailplane.dnsproviders.errors import (
    CredentialsRejected,
    ProviderUnavailable,
    RecordRejected,
    ZoneNotFound,
)
from mailplane.dnsproviders.http import RetryPolicy
from mailplane.dnsproviders.interface import RecordSpec, Zone
from tests.support.dns_providers import CF_TOKEN

FAST = RetryPolicy(attempts=3, max_wait=2.0, backoff=0.01)


@pytest.fixture
def client(fake_cloudflare):
    made = CloudflareClient(
        api_token=CF_TOKEN, base_url=fake_cloudflare.base_url, policy=FAST, timeout=5
    )
    yield made
    made.close()


@pytest.fixture
def zone(fake_cloudflare):
    zone_id = fake_cloudflare.add_zone("acme.test")
    return Zone(id=zone_id, name="acme.test")


def test_verify_sends_the_bearer_token_and_reads_the_status(fake_cloudflare, client, zone):
    assert client.verify_credentials() == "Cloudflare API token active; it can see 1 zone(s)"
    verify = fake_cloudflare.requests[0]
    assert (verify.method, verify.path) == ("GET", "/client/v4/user/tokens/verify")
    assert verify.headers["Authorization"] == f"Bearer {CF_TOKEN}"


def test_a_bad_token_is_rejected_with_cloudflares_message(fake_cloudflare):
    bad = CloudflareClient(
        api_token="x" * 40, base_url=fake_cloudflare.base_url, policy=FAST, timeout=5
    )
    with pytest.raises(CredentialsRejected, match=r"Invalid API Token \(code 1000\)"):
        bad.verify_credentials()
    with pytest.raises(CredentialsRejected, match=r"Invalid access token \(code 9109\)"):
        bad.find_zone("acme.test")
    assert fake_cloudflare.requests[0].status == 401
    assert fake_cloudflare.requests[1].status == 403


def test_a_disabled_token_is_rejected(fake_cloudflare):
    fake_cloudflare.add_token("disabled-token-0123456789", status="disabled")
    client = CloudflareClient(
        api_token="disabled-token-0123456789",
        base_url=fake_cloudflare.base_url,
        policy=FAST,
        timeout=5,
    )
    with pytest.raises(CredentialsRejected, match="is disabled"):
        client.verify_credentials()


def test_a_token_without_access_to_the_zone_says_which_permissions(fake_cloudflare, zone):
    fake_cloudflare.add_token("narrow-token-0123456789", zones=set())
    client = CloudflareClient(
        api_token="narrow-token-0123456789",
        base_url=fake_cloudflare.base_url,
        policy=FAST,
        timeout=5,
    )
    with pytest.raises(CredentialsRejected, match="Zone:Read and DNS:Edit"):
        client.list_records(zone, name="acme.test")


def test_find_zone_walks_up_from_a_subdomain(fake_cloudflare, client, zone):
    found = client.find_zone("mail.eu.acme.test")
    assert found == Zone(id=zone.id, name="acme.test", status="active")
    asked = [r.param("name") for r in fake_cloudflare.requests]
    assert asked == ["mail.eu.acme.test", "eu.acme.test", "acme.test"]
    assert {r.param("per_page") for r in fake_cloudflare.requests} == {"5"}


def test_an_unknown_zone_is_zone_not_found(fake_cloudflare, client):
    with pytest.raises(ZoneNotFound, match=r"no Cloudflare zone for nowhere\.test"):
        client.find_zone("nowhere.test")
    with pytest.raises(ZoneNotFound, match="code 7003"):
        client.list_records(Zone(id="0" * 32, name="gone.test"), name="gone.test")


def test_records_come_back_from_every_page(fake_cloudflare, client, zone):
    fake_cloudflare.add_records(
        zone.id,
        [{"type": "TXT", "name": "acme.test", "content": f'"note {i}"'} for i in range(230)],
    )
    fake_cloudflare.add_record(
        zone.id, type="MX", name="acme.test", content="mx.other.test", priority=5
    )
    records = client.list_records(zone, name="acme.test", type="TXT")
    assert sorted(r.content for r in records) == sorted(f"note {i}" for i in range(230))
    pages = [r for r in fake_cloudflare.requests if r.path.endswith("/dns_records")]
    assert [r.param("page") for r in pages] == ["1", "2", "3"]
    assert {r.param("per_page") for r in pages} == {"100"}
    assert {r.param("type") for r in pages} == {"TXT"}


def test_create_update_delete_speak_the_documented_bodies(fake_cloudflare, client, zone):
    mx = client.create_record(
        zone, RecordSpec("MX", "acme.test", "MX.Platform.Test.", 10), comment="mailplane:mx x"
    )
    sent = fake_cloudflare.writes[0]
    assert (sent.method, sent.path) == ("POST", f"/client/v4/zones/{zone.id}/dns_records")
    assert sent.json == {
        "content": "mx.platform.test",
        "priority": 10,
        "name": "acme.test",
        "type": "MX",
        "ttl": 1,
        "comment": "mailplane:mx x",
    }
    assert (mx.content, mx.priority, mx.comment) == ("mx.platform.test", 10, "mailplane:mx x")

    cname = client.create_record(
        zone, RecordSpec("CNAME", "bounces.acme.test", "rp.platform.test"), comment="c"
    )
    assert fake_cloudflare.writes[1].json["proxied"] is False  # mail hosts are never proxied

    updated = client.update_record(
        zone, mx, RecordSpec("MX", "acme.test", "mx2.platform.test", 20), comment=None
    )
    patch = fake_cloudflare.writes[2]
    assert (patch.method, patch.path) == (
        "PATCH",
        f"/client/v4/zones/{zone.id}/dns_records/{mx.id}",
    )
    assert patch.json == {"content": "mx2.platform.test", "priority": 20}  # comment untouched
    assert (updated.id, updated.content, updated.comment) == (
        mx.id,
        "mx2.platform.test",
        "mailplane:mx x",
    )

    client.delete_record(zone, cname)
    client.delete_record(zone, cname)  # already gone (81044): nothing to do
    assert [r["type"] for r in fake_cloudflare.zone_records(zone.id)] == ["MX"]


def test_long_txt_goes_as_quoted_255_byte_strings_and_reads_back_joined(
    fake_cloudflare, client, zone, dns_server
):
    from mailplane.dns import txt_lookup

    key = "v=DKIM1; k=rsa; p=" + "A" * 390 + '"quoted\\part"'
    record = client.create_record(
        zone, RecordSpec("TXT", "sel._domainkey.acme.test", key), comment="c"
    )
    stored = fake_cloudflare.zone_records(zone.id)[0]["content"]
    assert stored.startswith('"v=DKIM1; k=rsa; p=AAA') and '" "' in stored
    assert record.content == key
    assert client.list_records(zone, name="sel._domainkey.acme.test")[0].content == key
    assert txt_lookup("sel._domainkey.acme.test").records == (key,)  # what the DNS serves


def test_txt_quoting_round_trips():
    for text in ["", "plain", 'with "quotes" and \\ backslash', "é" * 200, "x" * 600]:
        quoted = txt_quote(text)
        assert all(len(part.encode()) <= 257 + part.count("\\") for part in quoted.split('" "'))
        assert txt_unquote(quoted) == text
    assert txt_unquote("bare text, not quoted") == "bare text, not quoted"
    assert txt_unquote('"a" "b"') == "ab"
    assert txt_unquote('"\\065\\066"') == "AB"  # \DDD escapes (RFC 1035 §5.1)
    assert txt_unquote('"unterminated') == '"unterminated'


def test_validation_errors_name_cloudflares_reason(fake_cloudflare, client, zone):
    with pytest.raises(
        RecordRejected, match=r"comment cannot be longer than 100 characters\. \(code 9219\)"
    ):
        client.create_record(zone, RecordSpec("TXT", "acme.test", "x"), comment="c" * 101)
    with pytest.raises(RecordRejected, match="not in the zone"):
        client.create_record(zone, RecordSpec("TXT", "elsewhere.test", "x"), comment="c")
    fake_cloudflare.add_record(zone.id, type="A", name="bounces.acme.test", content="192.0.2.1")
    with pytest.raises(RecordRejected, match="code 81053"):
        client.create_record(zone, RecordSpec("CNAME", "bounces.acme.test", "rp.test"), comment="c")


def test_429_is_retried_after_the_retry_after_delay(fake_cloudflare, client, zone):
    fake_cloudflare.force(
        429,
        {
            "success": False,
            "errors": [
                {"code": 971, "message": "Please wait and consider throttling your request speed"}
            ],
        },
        {"Retry-After": "1"},
    )
    started = time.monotonic()
    assert client.list_records(zone, name="acme.test") == []
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in fake_cloudflare.requests] == [429, 200]


def test_429_on_a_post_is_retried_too(fake_cloudflare, client, zone):
    fake_cloudflare.force(
        429,
        {"success": False, "errors": [{"code": 971, "message": "slow down"}]},
        {"Retry-After": "0"},
    )
    client.create_record(zone, RecordSpec("TXT", "acme.test", "hello"), comment="c")
    assert [(r.method, r.status) for r in fake_cloudflare.requests] == [
        ("POST", 429),
        ("POST", 200),
    ]
    assert len(fake_cloudflare.zone_records(zone.id)) == 1


def test_a_retry_after_beyond_the_budget_is_not_slept_through(fake_cloudflare, client, zone):
    fake_cloudflare.force(
        429,
        {"success": False, "errors": [{"code": 971, "message": "slow down"}]},
        {"Retry-After": "300"},
    )
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="wait 300 s") as caught:
        client.list_records(zone, name="acme.test")
    assert caught.value.retry_after == 300
    assert time.monotonic() - started < 1.0


def test_5xx_on_reads_is_retried_then_reported(fake_cloudflare, client, zone):
    fake_cloudflare.force(
        502, {"success": False, "errors": [{"code": 10001, "message": "bad gateway"}]}
    )
    assert client.list_records(zone, name="acme.test") == []
    fake_cloudflare.force(503, {"success": False, "errors": []}, times=3)
    with pytest.raises(ProviderUnavailable, match="HTTP 503 3 times"):
        client.list_records(zone, name="acme.test")


def test_5xx_on_a_post_is_not_sent_twice(fake_cloudflare, client, zone):
    fake_cloudflare.force(
        502, {"success": False, "errors": [{"code": 10001, "message": "bad gateway"}]}
    )
    with pytest.raises(ProviderUnavailable, match="HTTP 502"):
        client.create_record(zone, RecordSpec("TXT", "acme.test", "hello"), comment="c")
    assert [r.method for r in fake_cloudflare.requests] == ["POST"]


def test_an_unreachable_api_is_provider_unavailable():
    client = CloudflareClient(
        api_token=CF_TOKEN, base_url="http://127.0.0.1:9/client/v4", policy=FAST, timeout=2
    )
    with pytest.raises(ProviderUnavailable, match="Cloudflare could not be reached"):
        client.verify_credentials()


def test_a_reply_that_is_not_json_is_provider_unavailable(fake_cloudflare, client, zone):
    fake_cloudflare.force(200, None)
    with pytest.raises(ProviderUnavailable):
        client.list_records(zone, name="acme.test")
