"""/api/dns-providers/ and POST /api/domains/{id}/publish-dns/: credentials in, never out;
publishing as a task whose result /api/tasks/{id}/ shows; hostile input is a 4xx in the
error shape."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from mailplane.dnsproviders.models import DnsProviderConnection, DomainDnsPublication
from mailplane.domains.models import Domain
from mailplane.jobs.services import job_run
from tests.support.dns_providers import CF_TOKEN, GD_KEY, GD_SECRET
from tests.support.fixtures import wait_for_task

CF = {"name": "my cloudflare", "provider": "cloudflare", "credentials": {"api_token": CF_TOKEN}}
GD = {
    "name": "my godaddy",
    "provider": "godaddy",
    "credentials": {"api_key": GD_KEY, "api_secret": GD_SECRET},
}


def _error(response, status, field=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"]), body
    if field is not None:
        assert field in body["error"]["details"], body
    return body["error"]


def _add(account, body=CF):
    response = account.client.post("/api/dns-providers/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_add_list_show_rename_test_delete(account, fake_cloudflare):
    created = _add(account)
    assert created["credentials"] == {"api_token": "****" + CF_TOKEN[-4:]}
    assert (created["provider"], created["status"], created["domains"]) == (
        "cloudflare",
        "untested",
        [],
    )
    listing = account.client.get("/api/dns-providers/")
    assert listing.status_code == 200
    assert listing.json()["count"] == 1 and listing.json()["results"] == [created]
    assert account.client.get(f"/api/dns-providers/{created['id']}/").json() == created

    renamed = account.client.patch(
        f"/api/dns-providers/{created['id']}/", {"name": "cf prod"}, format="json"
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "cf prod"

    tested = account.client.post(f"/api/dns-providers/{created['id']}/test/")
    assert tested.status_code == 200, tested.content
    assert tested.json()["status"] == "valid" and tested.json()["tested_at"]
    assert fake_cloudflare.requests[0].path == "/client/v4/user/tokens/verify"

    for response in (created, listing.json(), renamed.json(), tested.json()):
        assert CF_TOKEN not in json.dumps(response)

    assert account.client.delete(f"/api/dns-providers/{created['id']}/").status_code == 204
    _error(account.client.get(f"/api/dns-providers/{created['id']}/"), 404)
    assert not DnsProviderConnection.objects.exists()


def test_a_failing_test_is_a_200_with_the_verdict(account, fake_godaddy):
    created = _add(
        account, {**GD, "credentials": {"api_key": GD_KEY, "api_secret": "wrong_secret_1"}}
    )
    tested = account.client.post(f"/api/dns-providers/{created['id']}/test/").json()
    assert tested["status"] == "invalid" and "UNABLE_TO_AUTHENTICATE" in tested["status_detail"]


def test_new_credentials_replace_the_old_and_are_not_echoed(account):
    created = _add(account)
    new = {"api_token": "N" * 40}
    response = account.client.patch(
        f"/api/dns-providers/{created['id']}/", {"credentials": new}, format="json"
    )
    assert response.status_code == 200
    assert (
        response.json()["credentials"] == {"api_token": "****NNNN"}
        and "N" * 40 not in response.content.decode()
    )
    assert DnsProviderConnection.objects.get(pk=created["id"]).credentials == new


def test_publish_dns_is_a_task_whose_result_lists_each_record(account, fake_cloudflare):
    fake_cloudflare.add_zone("acme.test")
    connection = _add(account)
    domain = account.client.post(
        "/api/domains/", {"name": "acme.test", "relay_server": account.relay.pk}, format="json"
    ).json()
    assert domain["dns_provider"] is None
    response = account.client.post(
        f"/api/domains/{domain['id']}/publish-dns/",
        {"dns_provider": connection["id"]},
        format="json",
    )
    assert response.status_code == 202, response.content
    task_id = response.json()["task_id"]
    assert account.client.get(f"/api/tasks/{task_id}/").json()["status"] == "pending"
    job_run(job_id=task_id)
    task = account.client.get(f"/api/tasks/{task_id}/").json()
    assert task["status"] == "success", task
    assert {r["purpose"]: r["action"] for r in task["result"]["records"]} == {
        "mx": "created",
        "spf": "created",
        "dkim": "created",
        "dmarc": "created",
        "return_path": "created",
    }
    assert task["result"]["verification_state"] == "verified"
    shown = account.client.get(f"/api/domains/{domain['id']}/").json()
    assert shown["dns_provider"] == connection["id"] and shown["verification_state"] == "verified"
    assert account.client.get(f"/api/dns-providers/{connection['id']}/").json()["domains"] == [
        domain["id"]
    ]

    # Later publishes use the domain's connection without naming it.
    again = account.client.post(f"/api/domains/{domain['id']}/publish-dns/", {}, format="json")
    assert again.status_code == 202
    job_run(job_id=again.json()["task_id"])
    result = account.client.get(f"/api/tasks/{again.json()['task_id']}/").json()["result"]
    assert {r["action"] for r in result["records"]} == {"unchanged"}


def test_a_domain_added_with_a_dns_provider_is_published(account, fake_godaddy):
    fake_godaddy.add_domain("acme.test")
    connection = _add(account, GD)
    response = account.client.post(
        "/api/domains/",
        {"name": "acme.test", "relay_server": account.relay.pk, "dns_provider": connection["id"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["dns_provider"] == connection["id"] and body["dns_publish_task_id"]
    job_run(job_id=body["dns_publish_task_id"])
    task = account.client.get(f"/api/tasks/{body['dns_publish_task_id']}/").json()
    assert task["status"] == "success" and task["result"]["verification_state"] == "verified"
    assert len(fake_godaddy.zone_records("acme.test")) == 5


def test_publish_without_any_provider_is_a_400(account):
    domain = account.client.post(
        "/api/domains/", {"name": "acme.test", "relay_server": account.relay.pk}, format="json"
    ).json()
    _error(
        account.client.post(f"/api/domains/{domain['id']}/publish-dns/", {}, format="json"),
        400,
        "dns_provider",
    )


@pytest.mark.worker
def test_publish_runs_on_a_real_celery_worker(account, fake_cloudflare, celery_worker_thread):
    fake_cloudflare.add_zone("acme.test")
    connection = _add(account)
    created = account.client.post(
        "/api/domains/",
        {"name": "acme.test", "relay_server": account.relay.pk, "dns_provider": connection["id"]},
        format="json",
    ).json()
    task = wait_for_task(account.client, created["dns_publish_task_id"], timeout=60)
    assert task["status"] == "success", task
    assert task["result"]["verification_state"] == "verified"
    assert Domain.objects.get(pk=created["id"]).is_verified


# -- hostile input --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**CF, "provider": "route53"}, "provider"),
        ({**CF, "provider": ["cloudflare"]}, "provider"),
        ({**CF, "name": "n" * 5000}, "name"),
        ({**CF, "name": ""}, "name"),
        ({**CF, "credentials": "token"}, "credentials"),
        ({**CF, "credentials": {"api_token": "t" * 1_000_000}}, "credentials.api_token"),
        (
            {**CF, "credentials": {"api_token": {"nested": {"deeper": [1, 2, 3]}}}},
            "credentials.api_token",
        ),
        (
            {**CF, "credentials": {"api_token": "bad\u0000token-0123456789abcdef"}},
            "credentials.api_token",
        ),
        ({**CF, "credentials": {f"k{i}": "v" for i in range(2000)}}, "credentials"),
        ({k: v for k, v in CF.items() if k != "credentials"}, "credentials"),
    ],
)
def test_bad_connection_bodies_are_400_naming_the_field(account, body, field):
    _error(account.client.post("/api/dns-providers/", body, format="json"), 400, field)
    assert not DnsProviderConnection.objects.exists()


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'"just a string"', b"null", b"\xff\xfe\x00"])
def test_malformed_json_is_a_400(account, raw):
    response = account.client.generic(
        "POST", "/api/dns-providers/", raw, content_type="application/json"
    )
    _error(response, 400)


@pytest.mark.parametrize("pk", ["0", "99999999999999999999999999", "9223372036854775808"])
def test_impossible_ids_are_404(account, pk):
    for method, path in (
        ("get", f"/api/dns-providers/{pk}/"),
        ("patch", f"/api/dns-providers/{pk}/"),
        ("delete", f"/api/dns-providers/{pk}/"),
        ("post", f"/api/dns-providers/{pk}/test/"),
        ("post", f"/api/domains/{pk}/publish-dns/"),
    ):
        _error(getattr(account.client, method)(path, {}, format="json"), 404)


def test_non_numeric_ids_are_404_in_the_error_shape(account):
    for path in (
        "/api/dns-providers/abc/",
        "/api/dns-providers/-1/test/",
        "/api/domains/x/publish-dns/",
    ):
        _error(account.client.post(path, {}, format="json"), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dns_provider": "abc"}, "dns_provider"),
        ({"dns_provider": -3}, "dns_provider"),
        ({"dns_provider": 10**30}, "dns_provider"),
        ({"dns_provider": 424242}, "dns_provider"),
        ({"dns_provider": [1]}, "dns_provider"),
        ({"merge_spf": "perhaps"}, "merge_spf"),
    ],
)
def test_bad_publish_bodies_are_400(account, body, field):
    domain = account.client.post(
        "/api/domains/", {"name": "acme.test", "relay_server": account.relay.pk}, format="json"
    ).json()
    _error(
        account.client.post(f"/api/domains/{domain['id']}/publish-dns/", body, format="json"),
        400,
        field,
    )
    assert not DomainDnsPublication.objects.exists()


def test_another_accounts_connection_cannot_be_used(account, other_account):
    theirs = _add(other_account)
    mine = account.client.post(
        "/api/domains/", {"name": "acme.test", "relay_server": account.relay.pk}, format="json"
    ).json()
    error = _error(
        account.client.post(
            f"/api/domains/{mine['id']}/publish-dns/", {"dns_provider": theirs["id"]}, format="json"
        ),
        400,
        "dns_provider",
    )
    assert error["details"]["dns_provider"] == [f"DNS-provider connection {theirs['id']} not found"]
    refused = account.client.post(
        "/api/domains/",
        {"name": "other.test", "relay_server": account.relay.pk, "dns_provider": theirs["id"]},
        format="json",
    )
    _error(refused, 400, "dns_provider")
    assert not Domain.objects.filter(name="other.test").exists()  # nothing half-made


def test_methods_and_authentication(account):
    created = _add(account)
    assert account.client.get(f"/api/dns-providers/{created['id']}/test/").status_code == 405
    assert account.client.get("/api/domains/1/publish-dns/").status_code == 405
    anonymous = APIClient()
    for path in ("/api/dns-providers/", f"/api/dns-providers/{created['id']}/"):
        assert anonymous.get(path).status_code in (401, 403)
