"""Killing the analytics consumer mid-run (SIGKILL: no drain, no cleanup) loses no event
and counts none twice: the counts commit with the cursor. The service runs as `mailplane
serve` starts it, in a process of its own, one event per transaction so that the kill
lands between many commits."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest
from django.db import connection

from mailplane.analytics.consumer import cursor_position
from mailplane.cli.serve import SERVICES
from mailplane.queue.events import events_last_seq
from mailplane.queue.models import EventType, RecipientStatus
from tests.analytics.conftest import Live, send, step, totals
from tests.support.fixtures import wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]
MESSAGES = 60


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _consumer() -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "MAILPLANE_ANALYTICS_BATCH_SIZE": "1",
        "MAILPLANE_ANALYTICS_POLL_INTERVAL": "0.05",
        "MAILPLANE_LOG_LEVEL": "WARNING",
    }
    env.pop("PYTEST_VERSION", None)
    # The very command `mailplane serve` runs for its "analytics" service.
    argv = SERVICES["analytics"].command(argparse.Namespace())
    assert argv == [sys.executable, "-m", "mailplane.analytics"]
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _poll_until(condition, *, timeout: float, what: str) -> None:
    """Tighter than wait_for: the kill must land while the consumer is busy."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_a_killed_consumer_counts_every_event_once(live: Live):
    for i in range(MESSAGES):
        (row,) = send(live, to=f"r{i}@dest.test", tags=["kill"])
        if i % 2:
            step(row, EventType.DELIVERED, RecipientStatus.DELIVERED, "250 ok")
        else:
            step(row, EventType.BOUNCED, RecipientStatus.BOUNCED, "550", bounce_class="hard")
    last = events_last_seq()

    first = _consumer()
    try:
        _poll_until(lambda: cursor_position() >= 10, timeout=60, what="the first counts")
    finally:
        first.kill()  # SIGKILL: whatever batch it held is lost with it
        first.wait(10)
    stopped_at = cursor_position()
    assert stopped_at < last, "killed too late to test anything"
    # More events while no consumer runs: the next one must count them as well.
    for i in range(5):
        send(live, to=f"late{i}@dest.test")

    second = _consumer()
    try:
        wait_for(lambda: cursor_position() == events_last_seq(), timeout=90, what="caught up")
    finally:
        second.terminate()
        assert second.wait(30) == 0, second.stderr.read() if second.stderr else ""

    half = MESSAGES // 2
    expected = {
        "sent": MESSAGES + 5,
        "delivered": half,
        "bounced": half,
        "bounced:hard": half,
    }
    assert totals(live.server) == expected
    assert totals(live.server, tag="kill") == {**expected, "sent": MESSAGES}
