"""The Redis that tests share with the production-mode run (scripts/test starts it)."""

from __future__ import annotations

import os

import pytest
import redis

from tests.support.tools import environment_missing


@pytest.fixture
def redis_url() -> str:
    """TEST_REDIS_URL when set (so that concurrent runs on one machine keep apart), else the
    broker's Redis when the run uses one, else db 14 on the local server; the test is
    skipped, saying why, when no Redis answers."""
    broker = os.environ.get("CELERY_BROKER_URL", "")
    url = os.environ.get("TEST_REDIS_URL") or (
        broker if broker.startswith("redis://") else "redis://127.0.0.1:6379/14"
    )
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        environment_missing(f"no Redis at {url} (scripts/test starts one: scripts/services-up)")
    return url
