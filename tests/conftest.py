"""Shared fixtures. Tests run on SQLite by default; set DATABASE_URL and CELERY_BROKER_URL
(PostgreSQL + Redis) to run the same suite in production mode, as CI does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Settings are imported by pytest-django before this file runs: the isolated data
# directory and the in-process broker for test runs are chosen in mailplane.config.

pytest_plugins = [
    "pytester",
    "tests.support.tools",  # first: other support modules import it
    "tests.support.fixtures",
    "tests.support.dns_server",
    "tests.support.redis_server",
    "tests.support.dns_providers",
    "tests.support.openapi",  # every APIClient response is checked against the schema
]


@pytest.fixture(autouse=True)
def _forget_wrong_api_keys() -> Iterator[None]:
    """Each test starts with no failed API-key authentications counted against the test
    client's address (many tests send wrong keys on purpose; the throttle would carry
    them into the next test)."""
    yield
    from mailplane.api.throttling import _limits_for, auth_failure_limits

    if _limits_for.cache_info().currsize:
        auth_failure_limits().reset()
        _limits_for.cache_clear()
    # Nor the requests it made: each test has the whole request quota (api/ratelimits.py).
    from mailplane.api.ratelimits import _counters_for, rate_counters

    if _counters_for.cache_info().currsize:
        rate_counters().reset()
        _counters_for.cache_clear()


@pytest.fixture(autouse=True)
def _forget_destination_throttles() -> Iterator[None]:
    """Nor a receiver's throttle of a test's sinks (delivery/politeness.py): the next test
    that sends to the same MX group from the same address would find it held."""
    yield
    from mailplane.delivery.politeness import politeness_reset

    politeness_reset()


@pytest.fixture(scope="session", autouse=True)
def _close_other_threads_connections(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[None]:
    """At the end of the run, end the database sessions that server thread pools (SMTP,
    IMAP logins, group commit) still keep open for CONN_MAX_AGE, so that PostgreSQL lets
    pytest-django drop the test database. Torn down before django_db_setup is."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
