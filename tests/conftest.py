"""Shared fixtures. Tests run on SQLite by default; set DATABASE_URL and CELERY_BROKER_URL
(PostgreSQL + Redis) to run the same suite in production mode, as CI does."""

from __future__ import annotations

# Settings are imported by pytest-django before this file runs: the isolated data
# directory and the in-process broker for test runs are chosen in mailplane.config.

pytest_plugins = [
    "tests.support.fixtures",
    "tests.support.dns_server",
    "tests.support.redis_server",
]
