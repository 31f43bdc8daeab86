"""The seeds' mailbox workflow: POST -> task_id -> poll -> list, with a real Celery worker."""

from __future__ import annotations

import pytest

from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.passwords import password_verify
from tests.support.fixtures import verified_domain, wait_for_task

SEED_PAYLOAD = {
    "email": "john.doe",
    "relay_server": None,
    "password": "SecurePassword123!",
    "project": None,
    "reply_to": "support@yourdomain.com",
}


def _payload(account, mailbox_domain, **overrides):
    body = {**SEED_PAYLOAD, "domain": mailbox_domain.pk, "relay_server": account.relay.pk}
    body.update(overrides)
    return body


@pytest.mark.worker
def test_seed_workflow_creates_mailbox_through_task(account, celery_worker_thread):
    domain = verified_domain(account)
    project = account.client.post("/api/projects/", {"name": "Outreach"}, format="json").json()
    response = account.client.post(
        "/api/mailboxes/", _payload(account, domain, project=project["id"]), format="json"
    )
    assert response.status_code == 202
    task_id = response.json()["task_id"]

    task = wait_for_task(account.client, task_id)
    assert task["status"] == "success", task
    assert task["mailbox"]["email"] == "john.doe@acme.test"

    listing = account.client.get("/api/mailboxes/").json()
    assert listing["count"] == 1
    mailbox = listing["results"][0]
    assert mailbox["email"] == "john.doe@acme.test"
    assert mailbox["domain_name"] == "acme.test"
    assert mailbox["reply_to"] == "support@yourdomain.com"
    assert mailbox["project"] == project["id"]
    assert mailbox["password"] == "SecurePassword123!"
    stored = Mailbox.objects.get(pk=mailbox["id"])
    assert password_verify("SecurePassword123!", stored.password_hash)
    assert not password_verify("SecurePassword123?", stored.password_hash)


@pytest.mark.worker
def test_password_generated_when_omitted(account, celery_worker_thread):
    domain = verified_domain(account)
    body = _payload(account, domain)
    del body["password"]
    task_id = account.client.post("/api/mailboxes/", body, format="json").json()["task_id"]
    assert wait_for_task(account.client, task_id)["status"] == "success"
    mailbox = account.client.get("/api/mailboxes/").json()["results"][0]
    assert len(mailbox["password"]) >= 12
    assert password_verify(mailbox["password"], Mailbox.objects.get().password_hash)


@pytest.mark.worker
def test_task_reports_failure_with_reason_when_limit_hit_in_worker(
    make_account, celery_worker_thread
):
    account = make_account(plan="starter")
    account.org.mailboxes_limit_override = 1
    account.org.save()
    domain = verified_domain(account)
    first = account.client.post("/api/mailboxes/", _payload(account, domain), format="json")
    # The pending job counts against the limit: a second request is refused at once.
    second = account.client.post(
        "/api/mailboxes/", _payload(account, domain, email="jane"), format="json"
    )
    assert second.status_code == 403
    assert second.json()["error"]["code"] == "limit_reached"
    assert wait_for_task(account.client, first.json()["task_id"])["status"] == "success"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": ""}, "email"),
        ({"email": "john@other.test"}, "email"),  # a full address of another domain
        ({"email": "john..doe"}, "email"),
        ({"email": "x" * 65}, "email"),
        ({"password": "short1!A"}, "password"),
        ({"password": "alllowercase123!"}, "password"),
        ({"password": "NoDigitsHere!!!!"}, "password"),
        ({"password": "NoSymbols1234567"}, "password"),
        ({"password": "John.Doe-Secret1!"}, "password"),
        ({"password": "Has#Hash12345!"}, "password"),
        ({"password": "Has Space12345!"}, "password"),
        ({"password": 12345}, "password"),
        ({"domain": 999999}, "domain"),
        ({"domain": "abc"}, "domain"),
        ({"domain": None}, "domain"),
        ({"relay_server": 999999}, "relay_server"),
        ({"project": 999999}, "project"),
        ({"reply_to": "not-an-address"}, "reply_to"),
        ({"first_name": "x" * 101}, "first_name"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(account, overrides, field):
    domain = verified_domain(account)
    response = account.client.post(
        "/api/mailboxes/", _payload(account, domain, **overrides), format="json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]
    assert Mailbox.objects.count() == 0


def test_unverified_domain_is_refused(account):
    from mailplane.domains.services import domain_create

    domain = domain_create(
        organization=account.org, name="pending.test", relay_server=account.relay
    )
    response = account.client.post("/api/mailboxes/", _payload(account, domain), format="json")
    assert response.status_code == 400
    assert "not verified" in response.json()["error"]["details"]["domain"][0]


def test_non_object_body_and_malformed_json_are_400(account):
    assert account.client.post("/api/mailboxes/", [1, 2], format="json").status_code == 400
    response = account.client.post("/api/mailboxes/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_duplicates_are_409_for_mailboxes_as_for_domains_and_projects(account):
    """One status for a conflict: a mailbox, a domain or a project that exists is a 409
    `conflict` naming the field (issue 9: a duplicate mailbox was a 400)."""
    from mailplane.mailboxes.services import mailbox_create, mailbox_validate

    domain = verified_domain(account)
    spec = mailbox_validate(organization=account.org, data=_payload(account, domain))
    mailbox_create(organization=account.org, spec=spec)
    for email in ("john.doe", "John.Doe@acme.test"):
        response = account.client.post(
            "/api/mailboxes/", _payload(account, domain, email=email), format="json"
        )
        assert response.status_code == 409, response.content
        error = response.json()["error"]
        assert error["code"] == "conflict"
        assert "john.doe@acme.test already exists" in error["details"]["email"][0]
    # An otherwise bad request is still the 400 that names every bad field.
    bad = account.client.post(
        "/api/mailboxes/", _payload(account, domain, reply_to="nope"), format="json"
    )
    assert bad.status_code == 400 and "reply_to" in bad.json()["error"]["details"]
    again = account.client.post(
        "/api/domains/", {"name": "acme.test", "relay_server": account.relay.pk}, format="json"
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    account.client.post("/api/projects/", {"name": "p"}, format="json")
    project = account.client.post("/api/projects/", {"name": "p"}, format="json")
    assert project.status_code == 409 and "name" in project.json()["error"]["details"]


def _create(account, domain, local_part, project=None):
    from mailplane.mailboxes.services import mailbox_create, mailbox_validate

    spec = mailbox_validate(
        organization=account.org,
        data=_payload(account, domain, email=local_part, project=project),
    )
    return mailbox_create(organization=account.org, spec=spec)


def test_list_is_paginated_and_filterable(account):
    domain = verified_domain(account)
    other_domain = verified_domain(account, "beta.test")
    project = account.client.post("/api/projects/", {"name": "P"}, format="json").json()["id"]
    for i in range(5):
        _create(account, domain, f"user{i}", project=project if i % 2 else None)
    _create(account, other_domain, "solo")

    page = account.client.get("/api/mailboxes/?limit=2&offset=2").json()
    assert page["count"] == 6
    assert [m["email"] for m in page["results"]] == ["user2@acme.test", "user3@acme.test"]
    assert "offset=4" in page["next"]
    by_project = account.client.get(f"/api/mailboxes/?project={project}").json()
    assert {m["email"] for m in by_project["results"]} == {"user1@acme.test", "user3@acme.test"}
    by_domain = account.client.get(f"/api/mailboxes/?domain={other_domain.pk}").json()
    assert [m["email"] for m in by_domain["results"]] == ["solo@beta.test"]
    assert account.client.get("/api/mailboxes/?project=abc").status_code == 400


def test_retrieve_update_delete(account):
    domain = verified_domain(account)
    mailbox = _create(account, domain, "jane")
    url = f"/api/mailboxes/{mailbox.pk}/"
    assert account.client.get(url).json()["email"] == "jane@acme.test"

    changed = account.client.patch(
        url,
        {
            "first_name": "Jane",
            "last_name": "Doe",
            "password": "Another-Secret-42",
            "daily_limit": 80,
            "warmup_enabled": True,
        },
        format="json",
    )
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["first_name"], body["daily_limit"], body["warmup_active"]) == ("Jane", 80, True)
    mailbox.refresh_from_db()
    assert password_verify("Another-Secret-42", mailbox.password_hash)

    bad = account.client.patch(url, {"password": "weak", "email": "renamed"}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()["error"]["details"]) == {"password", "email"}
    mailbox.refresh_from_db()
    assert password_verify("Another-Secret-42", mailbox.password_hash)

    assert account.client.delete(url).status_code == 204
    assert account.client.get(url).status_code == 404


def test_singular_alias_path_accepts_create(account):
    domain = verified_domain(account)
    response = account.client.post("/mailbox/", _payload(account, domain), format="json")
    assert response.status_code == 202
    assert "task_id" in response.json()
