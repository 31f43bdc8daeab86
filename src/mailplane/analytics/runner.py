"""The "analytics" service (`mailplane serve`, `python -m mailplane.analytics`): counts
the event stream as it grows.

A service of its own rather than a Celery beat task: beat's schedule is coarse (a task a
second at best, and the embedded broker polls once a second too), each run pays a
broker round trip and a worker slot, and runs can overlap. A loop that looks at the
stream's last number every ANALYTICS_POLL_INTERVAL (one indexed read when idle) keeps
the counts a fraction of a second behind, at no cost to the workers. Any number may run
(PostgreSQL): the cursor's row lock makes them take turns, never double count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import connections

from mailplane.analytics.config import conf
from mailplane.analytics.consumer import events_count

log = logging.getLogger("mailplane.analytics")


class AnalyticsWorker:
    def __init__(self) -> None:
        self._stop: asyncio.Event | None = None

    def _drain(self) -> int:
        """Count until caught up (a stop waits for the batch in hand only)."""
        total = 0
        while counted := events_count(limit=int(conf("ANALYTICS_BATCH_SIZE"))):
            total += counted
            if self._stop is not None and self._stop.is_set():
                break
        return total

    async def run_forever(self, stop: asyncio.Event) -> None:
        """The service: counts until `stop`. The ORM is synchronous: it runs on a thread
        of its own, the loop only waits."""
        self._stop = stop
        loop = asyncio.get_running_loop()
        db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analytics-db")
        poll = float(conf("ANALYTICS_POLL_INTERVAL"))
        log.info("analytics consumer started")
        try:
            while not stop.is_set():
                try:
                    await loop.run_in_executor(db, self._drain)
                except Exception:  # the database went away: try again shortly
                    log.exception("analytics cycle failed")
                    await loop.run_in_executor(db, connections.close_all)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll)
        finally:
            await loop.run_in_executor(db, connections.close_all)
            db.shutdown(wait=True)
            log.info("analytics consumer stopped")
