"""Issue 9's inconsistencies, one test each: one list shape, reply_to null when unset, no
raw DRF messages, a mailbox created from a local part or a full address, a generated
password shown once in the task result, and what lists show of passwords."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import URLPattern

from mailplane.api import urls as api_urls
from mailplane.jobs.models import Job
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.passwords import password_verify
from mailplane.mailboxes.services import mailbox_create, mailbox_validate
from tests.support.fixtures import verified_domain, wait_for_task

LIST_ROUTES = sorted(
    "/" + str(p.pattern)
    for p in api_urls.urlpatterns
    if isinstance(p, URLPattern) and str(p.name).endswith("-list")
)


def test_every_list_route_is_found():
    """The discovery finds the lists (each then checked for the one page shape below); a
    new list route joins by its name ending in "-list", with nothing to edit here."""
    known = {
        "/api/api-keys/",
        "/api/domains/",
        "/api/mailboxes/",
        "/api/messages/",
        "/api/projects/",
        "/api/relay-servers/",
        "/api/server/messages/",
        "/api/servers/",
        "/api/servers/<id:pk>/keys/",
    }
    assert known <= set(LIST_ROUTES), known - set(LIST_ROUTES)
    assert len(LIST_ROUTES) == len(set(LIST_ROUTES))


# The server's own lists take a server key or a server id: test_server_lists_… below.
ACCOUNT_LISTS = [p for p in LIST_ROUTES if "<" not in p and not p.startswith("/api/server/")]


@pytest.mark.parametrize("path", [*ACCOUNT_LISTS, "/mailbox/"])
def test_every_list_has_the_one_paginated_shape(account, path):
    """Relay servers and API keys were bare arrays (issue 9): every list is DRF's page."""
    page = account.client.get(f"{path}?limit=1").json()
    assert isinstance(page, dict) and set(page) == {"count", "next", "previous", "results"}
    assert isinstance(page["results"], list) and len(page["results"]) <= 1


def test_server_lists_have_the_one_paginated_shape(account):
    from tests.support.servers import server_make

    access = server_make(account)
    pages = [
        account.client.get(f"/api/servers/{access.server.pk}/keys/?limit=1").json(),
        account.client.get(f"/api/servers/{access.server.pk}/bounce-rules/?limit=1").json(),
        access.client.get("/api/server/messages/?limit=1").json(),
    ]
    for page in pages:
        assert isinstance(page, dict) and set(page) == {"count", "next", "previous", "results"}
        assert isinstance(page["results"], list) and len(page["results"]) <= 1


def test_relay_servers_and_keys_page_with_limit_and_offset(account):
    from mailplane.tenancy.services import api_key_create

    api_key_create(organization=account.org, name="second")
    first = account.client.get("/api/api-keys/?limit=1").json()
    assert first["count"] == 2 and first["next"] and first["previous"] is None
    second = account.client.get("/api/api-keys/?limit=1&offset=1").json()
    assert [k["name"] for k in first["results"] + second["results"]] == ["test", "second"]
    assert account.client.get("/api/relay-servers/").json()["count"] == 1


def _create(account, domain, **data):
    spec = mailbox_validate(
        organization=account.org,
        data={"email": "ann", "domain": domain.pk, "password": "SecurePassword123!", **data},
    )
    return mailbox_create(organization=account.org, spec=spec)


def test_reply_to_is_null_when_unset_everywhere(account):
    """It was "" in the task result and null in the list; null in both (and in detail)."""
    domain = verified_domain(account)
    mailbox = _create(account, domain)
    assert account.client.get("/api/mailboxes/").json()["results"][0]["reply_to"] is None
    path = f"/api/mailboxes/{mailbox.pk}/"
    assert account.client.get(path).json()["reply_to"] is None
    set_ = account.client.patch(path, {"reply_to": "back@acme.test"}, format="json")
    assert set_.json()["reply_to"] == "back@acme.test"
    for cleared in ("", None):
        account.client.patch(path, {"reply_to": "back@acme.test"}, format="json")
        reply = account.client.patch(path, {"reply_to": cleared}, format="json")
        assert reply.status_code == 200 and reply.json()["reply_to"] is None
    from mailplane.mailboxes.selectors import mailbox_summary

    assert mailbox_summary(mailbox=Mailbox.objects.get())["reply_to"] is None


def test_unknown_ids_in_bodies_name_the_field_not_drf(account):
    """No `Invalid pk "99" - object does not exist.`: each field says what was not found."""
    domain = verified_domain(account)
    mailbox = _create(account, domain)
    cases = [
        ("post", "/api/domains/", {"name": "b.test", "relay_server": 99}, "relay_server"),
        (
            "post",
            "/api/domains/",
            {"name": "b.test", "relay_server": account.relay.pk, "project": 99},
            "project",
        ),
        ("patch", f"/api/domains/{domain.pk}/", {"project": 99}, "project"),
        ("patch", f"/api/domains/{domain.pk}/", {"relay_server": 99}, "relay_server"),
        ("post", "/api/mailboxes/", {"email": "x", "domain": domain.pk, "project": 99}, "project"),
        ("patch", f"/api/mailboxes/{mailbox.pk}/", {"relay_server": 99}, "relay_server"),
        ("post", f"/api/domains/{domain.pk}/publish-dns/", {"dns_provider": 99}, "dns_provider"),
    ]
    for method, path, body, field in cases:
        reply = getattr(account.client, method)(path, body, format="json")
        assert reply.status_code == 400, (path, body, reply.content)
        message = reply.json()["error"]["details"][field][0]
        assert "99" in message and "not found" in message, message
        assert b"Invalid pk" not in reply.content and b"does not exist" not in reply.content


@pytest.mark.parametrize(
    ("data", "address"),
    [
        ({"email": "Ann"}, "ann@acme.test"),
        ({"email": "ann@acme.test"}, "ann@acme.test"),
        ({"email": "Ann@ACME.test"}, "ann@acme.test"),
        ({"email": "ann@acme.test", "domain": None}, "ann@acme.test"),  # found by name
    ],
)
def test_create_takes_a_local_part_or_a_full_address(account, data, address):
    domain = verified_domain(account)
    body = {"domain": domain.pk, "password": "SecurePassword123!", **data}
    if body["domain"] is None:
        del body["domain"]
    spec = mailbox_validate(organization=account.org, data=body)
    assert (spec.local_part, spec.domain_id) == ("ann", domain.pk)
    assert mailbox_create(organization=account.org, spec=spec).address == address


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"email": "ann@other.test"}, "email", "does not match domain acme.test"),
        ({"email": "ann@other.test", "domain": None}, "email", "not one of this account"),
        ({"email": "ann", "domain": None}, "domain", "required"),
        ({"email": "@acme.test"}, "email", "required"),
    ],
)
def test_a_full_address_must_agree_with_the_domain(account, data, field, words):
    domain = verified_domain(account)
    verified_domain(account, "other.test")
    Mailbox.objects.all().delete()
    body = {"domain": domain.pk, **data}
    if body["domain"] is None:
        del body["domain"]
    if "other.test" in str(data) and "domain" not in body:
        from mailplane.domains.models import Domain

        Domain.objects.filter(name="other.test").delete()
    reply = account.client.post("/api/mailboxes/", body, format="json")
    assert reply.status_code == 400, reply.content
    assert words in " ".join(reply.json()["error"]["details"][field])


@pytest.mark.worker
def test_a_generated_password_is_in_the_task_result_once(account, celery_worker_thread):
    domain = verified_domain(account)
    created = account.client.post(
        "/api/mailboxes/", {"email": "ann@acme.test", "domain": domain.pk}, format="json"
    )
    assert created.status_code == 202
    task_id = created.json()["task_id"]
    task = wait_for_task(account.client, task_id)
    assert task["status"] == "success", task
    password = task["mailbox"]["password"]
    assert password and task["result"]["mailbox"]["password"] == password
    stored = Mailbox.objects.get()
    assert password_verify(password, stored.password_hash)
    assert stored.address == "ann@acme.test"
    again = account.client.get(f"/api/tasks/{task_id}/")
    assert again.json()["mailbox"]["password"] is None  # shown once
    assert again["Cache-Control"] == "no-store"
    assert password not in str(Job.objects.get(pk=task_id).payload)  # no copy kept
    # The mailbox itself still shows it (see test_lists_show_passwords_unless_turned_off).
    assert account.client.get("/api/mailboxes/").json()["results"][0]["password"] == password


@pytest.mark.worker
def test_a_chosen_password_is_not_echoed_by_the_task(account, celery_worker_thread):
    domain = verified_domain(account)
    body = {"email": "ann", "domain": domain.pk, "password": "SecurePassword123!"}
    task_id = account.client.post("/api/mailboxes/", body, format="json").json()["task_id"]
    task = wait_for_task(account.client, task_id)
    assert task["status"] == "success" and task["mailbox"]["password"] is None
    assert "SecurePassword123!" not in str(Job.objects.get(pk=task_id).payload)


def test_lists_show_passwords_unless_turned_off(account, settings):
    """The compatible service's mailbox representation carries `password` and its clients
    read it there, so lists and details show it (with Cache-Control: no-store);
    MAILPLANE_API_SHOW_PASSWORDS=false shows null. The CSV exports carry passwords either
    way: outreach tools import them."""
    domain = verified_domain(account)
    mailbox = _create(account, domain)
    listing = account.client.get("/api/mailboxes/")
    assert listing.json()["results"][0]["password"] == "SecurePassword123!"
    assert listing["Cache-Control"] == "no-store"
    settings.MAILPLANE = {**settings.MAILPLANE, "API_SHOW_PASSWORDS": False}
    assert account.client.get("/api/mailboxes/").json()["results"][0]["password"] is None
    detail = account.client.get(f"/api/mailboxes/{mailbox.pk}/")
    assert detail.json()["password"] is None and detail["Cache-Control"] == "no-store"
    export = account.client.get("/mailbox/download/custom/")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert "SecurePassword123!" in rows[0].values()
