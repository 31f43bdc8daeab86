"""A domain error raised in a service reaches an API client as its own rendering.

Each request below makes a service raise (the view does not decide the status): the
response must be exactly the error's `http_status` and `http_body()`. Through APIClient,
so the OpenAPI fixture also checks each status is documented for its operation.
"""

from __future__ import annotations

import pytest

from mailplane.core.errors import Conflict, DomainError, LimitReached, NotFound, ValidationFailed
from mailplane.domains.selectors import domain_get
from mailplane.domains.services import domain_normalise
from mailplane.projects.selectors import project_get
from mailplane.projects.services import project_create
from tests.support.fixtures import verified_domain


def _raised(call, *args, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(*args, **kwargs)
    return caught.value


def _assert_rendered(response, error: DomainError) -> None:
    assert response.status_code == error.http_status, response.content
    assert response.json() == error.http_body()


def test_not_found_from_a_selector(account, other_account):
    theirs = project_create(organization=other_account.org, name="theirs")
    error = _raised(project_get, organization=account.org, project_id=theirs.pk)
    assert isinstance(error, NotFound)
    _assert_rendered(account.client.get(f"/api/projects/{theirs.pk}/"), error)
    domain = verified_domain(other_account, "theirs.test")
    error = _raised(domain_get, organization=account.org, domain_id=domain.pk)
    _assert_rendered(account.client.get(f"/api/domains/{domain.pk}/"), error)


def test_conflict_from_a_service(account):
    project_create(organization=account.org, name="dup")
    error = _raised(project_create, organization=account.org, name="dup")
    assert isinstance(error, Conflict)
    _assert_rendered(account.client.post("/api/projects/", {"name": "dup"}, format="json"), error)
    other = project_create(organization=account.org, name="other")
    renamed = account.client.patch(f"/api/projects/{other.pk}/", {"name": "dup"}, format="json")
    _assert_rendered(renamed, error)


def test_validation_failed_from_a_service(account):
    error = _raised(domain_normalise, "not a domain")
    assert isinstance(error, ValidationFailed)
    body = {"name": "not a domain", "relay_server": account.relay.pk}
    _assert_rendered(account.client.post("/api/domains/", body, format="json"), error)


def test_limit_reached_from_a_service(make_account):
    account = make_account(plan="starter")
    account.org.mailboxes_limit_override = 0
    account.org.save()
    domain = verified_domain(account)
    body = {"email": "jane", "domain": domain.pk, "password": "SecurePassword123!"}
    response = account.client.post("/api/mailboxes/", body, format="json")
    assert response.status_code == LimitReached.http_status
    assert response.json()["error"]["code"] == LimitReached.code
