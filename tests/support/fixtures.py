"""Accounts, API clients, secret keys as an operator sets them, and a real Celery worker
for tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from mailplane import config
from mailplane.core import crypto
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


def _purge_broker(app: Any) -> int:
    """Drop queued task messages, including ones a dead worker left unacknowledged (Redis)."""
    purged = app.control.purge() or 0
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = getattr(channel, "client", None)
        keys = [getattr(channel, k, None) for k in ("unacked_key", "unacked_index_key")]
        if client is not None and all(keys):
            client.delete(*keys)
    return purged


def _close_db_connections(**kwargs: Any) -> None:
    # Worker threads keep no connection between tasks: nothing then holds the test database
    # open while a transactional test flushes it or the session drops it.
    from django.db import connections

    connections.close_all()


@pytest.fixture(scope="session")
def _celery_session_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    """One worker thread for the whole session (started on first use): start and stop cost
    seconds each, so a worker per test dominated the suite's run time."""
    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun

    from mailplane.celery import app

    app.loader.import_module("celery.contrib.testing.tasks")
    if app.conf.broker_url.startswith("memory://"):
        # The in-process transport polls: 1 s by default, which every task waited on.
        app.conf.broker_transport_options = {"polling_interval": 0.02}
    with django_db_blocker.unblock():
        # Messages left in the broker by an earlier, interrupted run would run here against
        # ids that do not exist (or, worse, that exist again): start from an empty queue.
        _purge_broker(app)
    task_postrun.connect(_close_db_connections, weak=False)
    try:
        with start_worker(
            app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=30
        ) as worker:
            yield worker
    finally:
        task_postrun.disconnect(_close_db_connections)
        _close_db_connections()


def _wait_until_idle(timeout: float = 30.0) -> None:
    from celery.worker import state

    deadline = time.monotonic() + timeout
    while state.active_requests or state.reserved_requests:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Celery worker still busy after {timeout}s: "
                f"{len(state.active_requests)} active, {len(state.reserved_requests)} reserved"
            )
        time.sleep(0.02)


@pytest.fixture
def celery_worker_thread(transactional_db: Any, _celery_session_worker: Any) -> Iterator[Any]:
    """A real Celery worker (in a thread) consuming from the configured broker.

    The worker lives for the session; each test gets an empty queue and, before its data is
    flushed, waits until the worker has finished whatever the test started, so no task from
    one test ever runs against another test's database state.
    """
    from mailplane.celery import app

    _purge_broker(app)
    yield _celery_session_worker
    _purge_broker(app)
    _wait_until_idle()


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


@pytest.fixture
def secret_keys(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Configure the keys as an operator does, in MAILPLANE_SECRET_KEY, and rebuild the
    settings from it as mailplane.settings does at start-up."""

    def configure(*keys: str) -> None:
        monkeypatch.setenv("MAILPLANE_SECRET_KEY", " , ".join(keys))
        settings.SECRET_KEYS = config.secret_keys()
        settings.SECRET_KEY = settings.SECRET_KEYS[0]
        # The key ring is built once per process (it is on the login and export paths).
        crypto._box.cache_clear()

    yield configure
    crypto._box.cache_clear()  # the restored settings' keys again
