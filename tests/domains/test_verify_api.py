"""POST /api/domains/{id}/verify/ end to end: DNS server -> verify -> mailbox creation."""

from __future__ import annotations

import pytest

from mailplane.domains.models import VerificationState
from tests.domains.conftest import publish
from tests.support.fixtures import wait_for_task


def _create_domain(account, name="acme.test"):
    response = account.client.post(
        "/api/domains/", {"name": name, "relay_server": account.relay.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def _mailbox(account, domain_id):
    return account.client.post(
        "/api/mailboxes/",
        {"email": "john.doe", "domain": domain_id, "relay_server": account.relay.pk},
        format="json",
    )


def test_verify_reports_each_record_then_allows_mailboxes(account, dns_server):
    from mailplane.domains.models import Domain

    created = _create_domain(account)
    assert _mailbox(account, created["id"]).status_code == 400  # not verified yet

    first = account.client.post(f"/api/domains/{created['id']}/verify/")
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["verification_state"] == "dns_pending"
    assert body["last_checked_at"] is not None
    assert {r["purpose"]: r["status"] for r in body["records"]} == {
        "mx": "missing",
        "spf": "missing",
        "dkim": "missing",
        "dmarc": "missing",
        "return_path": "missing",
    }
    assert all(r["detail"] and r["checked_at"] for r in body["records"])

    publish(dns_server, Domain.objects.get(pk=created["id"]))
    second = account.client.post(f"/api/domains/{created['id']}/verify/").json()
    assert second["verification_state"] == "verified"
    assert second["verified_at"] is not None
    assert {r["status"] for r in second["records"]} == {"ok"}
    assert account.client.get(f"/api/domains/{created['id']}/").json() == second

    response = _mailbox(account, created["id"])
    assert response.status_code == 202, response.content
    assert response.json()["task_id"]


@pytest.mark.worker
def test_verified_through_api_mailbox_task_succeeds(account, dns_server, celery_worker_thread):
    from mailplane.domains.models import Domain

    created = _create_domain(account)
    publish(dns_server, Domain.objects.get(pk=created["id"]))
    verified = account.client.post(f"/api/domains/{created['id']}/verify/").json()
    assert verified["verification_state"] == VerificationState.VERIFIED
    task_id = _mailbox(account, created["id"]).json()["task_id"]
    task = wait_for_task(account.client, task_id)
    assert task["status"] == "success", task
    assert task["mailbox"]["email"] == "john.doe@acme.test"


def test_two_spf_records_reported_in_details(account, dns_server):
    from mailplane.domains.models import Domain

    created = _create_domain(account)
    publish(dns_server, Domain.objects.get(pk=created["id"]))
    dns_server.txt("acme.test", "v=spf1 include:spf.protection.outlook.com -all")
    body = account.client.post(f"/api/domains/{created['id']}/verify/").json()
    spf = next(r for r in body["records"] if r["purpose"] == "spf")
    assert spf["status"] == "invalid"
    assert "RFC 7208 §4.5" in spf["detail"]
    assert body["verification_state"] == "dns_pending"


def test_other_accounts_domain_is_404_and_untouched(account, other_account, dns_server):
    from mailplane.domains.models import Domain

    created = _create_domain(account)
    response = other_account.client.post(f"/api/domains/{created['id']}/verify/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert Domain.objects.get(pk=created["id"]).last_checked_at is None
    assert dns_server.queries == []  # not even looked up
    assert account.client.post("/api/domains/999999/verify/").status_code == 404


def test_verify_requires_authentication_and_post(account, dns_server):
    from rest_framework.test import APIClient

    created = _create_domain(account)
    assert APIClient().post(f"/api/domains/{created['id']}/verify/").status_code in (401, 403)
    assert account.client.get(f"/api/domains/{created['id']}/verify/").status_code == 405
