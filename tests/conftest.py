"""Shared fixtures. Tests run on SQLite by default; set DATABASE_URL and CELERY_BROKER_URL
(PostgreSQL + Redis) to run the same suite in production mode, as CI does."""

from __future__ import annotations

import os
import tempfile

# Isolated data directory and an in-process broker unless the environment chose a real one.
os.environ.setdefault("MAILPLANE_DATA_DIR", tempfile.mkdtemp(prefix="mailplane-test-"))
os.environ.setdefault("CELERY_BROKER_URL", "memory://")
os.environ.setdefault("MAILPLANE_SECRET_KEY", "test-secret-key-for-encryption-at-rest")

pytest_plugins = ["tests.support.fixtures", "tests.support.dns_server"]
