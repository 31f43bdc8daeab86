"""Accounts, API clients and a real Celery worker for tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from mailplane.domains.models import Domain, VerificationState
from mailplane.domains.services import domain_create
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization
from mailplane.tenancy.services import api_key_create, organization_create


@dataclass
class Account:
    org: Organization
    key: str
    client: APIClient

    @property
    def relay(self) -> RelayServer:
        return self.org.relay_servers.order_by("id").first()  # type: ignore[return-value]


@pytest.fixture
def make_account(db: Any) -> Callable[..., Account]:
    counter = iter(range(1, 10_000))

    def make(plan: str = "pro", name: str | None = None) -> Account:
        n = next(counter)
        org = organization_create(
            name=name or f"Tenant {n}", owner_email=f"owner{n}@example.test", plan=plan
        )
        issued = api_key_create(organization=org, name="test")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {issued.secret}")
        return Account(org=org, key=issued.secret, client=client)

    return make


@pytest.fixture
def account(make_account: Callable[..., Account]) -> Account:
    return make_account()


@pytest.fixture
def other_account(make_account: Callable[..., Account]) -> Account:
    return make_account(name="Intruder Inc")


def verified_domain(account: Account, name: str = "acme.test") -> Domain:
    """A domain whose DNS checks are taken as passed (DNS verification has its own tests)."""
    domain = domain_create(organization=account.org, name=name, relay_server=account.relay)
    Domain.objects.filter(pk=domain.pk).update(verification_state=VerificationState.VERIFIED)
    domain.refresh_from_db()
    return domain


@pytest.fixture
def celery_worker_thread(transactional_db: Any) -> Iterator[Any]:
    """A real Celery worker (in a thread) consuming from the configured broker."""
    from celery.contrib.testing.worker import start_worker

    from mailplane.celery import app

    app.loader.import_module("celery.contrib.testing.tasks")
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=30
    ) as worker:
        yield worker


def wait_for(
    condition: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition"
) -> Any:
    """Poll until `condition()` is truthy; fail loudly on the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_task(client: APIClient, task_id: str, *, timeout: float = 20.0) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body = client.get(f"/api/tasks/{task_id}/").json()
        return body if body["status"] in ("success", "failure") else None

    return wait_for(finished, timeout=timeout, what=f"task {task_id}")  # type: ignore[no-any-return]
