"""The webhook service: consume events into deliveries, claim due ones, POST them signed,
record every attempt. `run_forever` is what `mailplane serve` starts ("webhooks",
`python -m mailplane.webhooks`); `run_until_idle` is the same cycle for tests.

As delivery/worker.py: the ORM is synchronous, so database work runs on threads of its
own in the service: one for the consumer (events into deliveries), one for the runner's
rounds (record what ended and claim what is due, one transaction each), so that reading
a backlog of events does not hold up the requests' records; in `run_until_idle` both
run on the caller's thread, with the loop on a thread of its own (delivery/worker.py's
`_CallerThread`, so a test's transaction sees every row). The HTTP requests run on the
event loop over keep-alive connections per endpoint (http1.py). The lease
outlasts a request (at least twice the timeout), so no heartbeat is needed: a request
that ends is recorded before its lease does.

A round starts as soon as a request ends (and those ending within GATHER after it share
its commit), or when the consumer has written new deliveries; the requests that end
while a round runs are recorded by the next one, straight away. So the batch of a round
grows with the database's latency, and the lag from an event to its request is about
one poll of the consumer plus a round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11
from django.db import connections
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import ValidationFailed
from mailplane.delivery.worker import _CallerThread
from mailplane.webhooks.config import conf
from mailplane.webhooks.consumer import events_consume
from mailplane.webhooks.guard import AddressRefused, target_resolve, url_check
from mailplane.webhooks.http1 import Http1Client, ProtocolFailure
from mailplane.webhooks.models import DeliveryState, WebhookDelivery
from mailplane.webhooks.outbox import AttemptResult, Claimed, attempts_record, deliveries_claim
from mailplane.webhooks.signing import headers as signed_headers

log = logging.getLogger("mailplane.webhooks")
_SOON = timedelta(seconds=2)
GATHER = 0.003  # seconds: how long a round waits for more requests to end
T = TypeVar("T")
USER_AGENT = "Mailplane-Webhooks/1"


class WebhookWorker:
    def __init__(self, worker_id: str | None = None) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.timeout = float(conf("WEBHOOKS_TIMEOUT"))
        self.lease = max(float(conf("WEBHOOKS_LEASE_SECONDS")), 2 * self.timeout + 5)
        self.concurrency = int(conf("WEBHOOKS_CONCURRENCY"))
        self.excerpt = int(conf("WEBHOOKS_RESPONSE_EXCERPT"))
        self._db: Executor | None = None
        # The consumer's own thread in the service (None: it runs on `_db`, per round).
        self._consumer_db: Executor | None = None
        self._wake: asyncio.Event | None = None  # the consumer wrote deliveries
        self._tasks: set[asyncio.Task[AttemptResult]] = set()
        self._done: list[AttemptResult] = []

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._db is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._db, lambda: fn(*args, **kwargs)
        )

    async def _cycle(self, transport: Http1Client) -> bool:
        """One round: read new events (unless the consumer has a thread of its own),
        record what finished and start what is due (one transaction: one commit per
        round, however many requests ended). True when there was anything to do."""
        busy = False
        if self._consumer_db is None:
            while await self._call(events_consume):
                busy = True
        if self._wake is not None:
            self._wake.clear()  # what the consumer writes from now on wakes the next round
        finished, self._done = self._done, []
        room = self.concurrency - len(self._tasks)
        try:
            claimed = await self._call(
                _record_and_claim,
                finished,
                worker_id=self.worker_id,
                limit=min(room, int(conf("WEBHOOKS_BATCH_SIZE"))),
                lease=self.lease,
            )
        except BaseException:
            self._done[:0] = finished  # not recorded (rolled back): the next round will
            raise
        for item in claimed:
            task = asyncio.create_task(self._post(transport, item))
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        return busy or bool(finished) or bool(claimed)

    def _finished(self, task: asyncio.Task[AttemptResult]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            self._done.append(task.result())

    async def _wait(self, stop: asyncio.Event | None, poll: float) -> None:
        """Until a request ends (and those ending within GATHER after it: their records
        share a commit), the poll interval passes, or `stop`."""
        waiters: list[asyncio.Future[Any]] = [*self._tasks]
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopper is not None:
            waiters.append(stopper)
        waker = None
        if self._wake is not None and len(self._tasks) < self.concurrency:
            waker = asyncio.ensure_future(self._wake.wait())
            waiters.append(waker)
        if waiters:
            await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            if self._tasks and not (stopper is not None and stopper.done()):
                await asyncio.wait([*self._tasks], timeout=GATHER)
        else:
            await asyncio.sleep(poll)
        for waiter in (stopper, waker):
            if waiter is not None and not waiter.done():
                waiter.cancel()

    async def _post(self, client: Http1Client, item: Claimed) -> AttemptResult:
        started_at = timezone.now()
        start = time.monotonic()

        def result(**fields: Any) -> AttemptResult:
            latency = int((time.monotonic() - start) * 1000)
            return AttemptResult(item.delivery_id, item.endpoint_id, started_at, latency, **fields)

        body = item.body.encode()
        try:
            target = url_check(item.url)
            url = urlsplit(item.url)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            headers = [
                ("host", url.netloc),
                *signed_headers(
                    secrets_=item.secrets,
                    webhook_id=item.webhook_id,
                    timestamp=int(time.time()),
                    body=body,
                ).items(),
                ("content-type", "application/json"),
                ("user-agent", USER_AGENT),
                ("accept-encoding", "identity"),  # an excerpt is all we keep
            ]
            async with asyncio.timeout(self.timeout):
                # The address the guard checked is the one connected to (no rebinding
                # between check and connect); TLS still verifies the URL's host name.
                address = await target_resolve(target)
                answer = await client.post(
                    key=(target.scheme, str(address), target.port, target.host),
                    target=path,
                    headers=headers,
                    body=body,
                    excerpt=self.excerpt,
                )
            return result(
                status_code=answer.status,
                excerpt=answer.excerpt.decode("utf-8", "replace"),
                retry_after=answer.retry_after,
            )
        except (AddressRefused, ValidationFailed) as exc:  # the guard's refusals
            return result(error=str(exc))
        except TimeoutError:
            return result(error=f"timed out after {self.timeout:g} s")
        except (OSError, ProtocolFailure, h11.ProtocolError) as exc:
            return result(error=f"{type(exc).__name__}: {exc}"[:500])
        except Exception as exc:  # a bad stored URL, an unexpected failure: an attempt too
            log.exception("webhook delivery %s failed unexpectedly", item.delivery_id)
            return result(error=f"{type(exc).__name__}: {exc}"[:500])

    def _transport(self) -> Http1Client:
        return Http1Client(
            # Head and body go in one write, but the receiver's ACK still should not wait
            # for more (Nagle): no delay.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.wait([*self._tasks])
        if self._done:
            finished, self._done = self._done, []
            await self._call(_record_and_claim, finished, worker_id=self.worker_id)

    async def _consume_forever(self, stop: asyncio.Event, poll: float) -> None:
        """The consumer on its own thread: events into deliveries, waking the runner
        when there are new ones; a poll of the stream when caught up."""
        assert self._consumer_db is not None and self._wake is not None
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                read = await loop.run_in_executor(self._consumer_db, events_consume)
            except Exception:  # the database went away: try again shortly
                log.exception("webhook consumer step failed")
                read = 0
            if read:
                self._wake.set()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """The service: cycles until `stop`, then waits for the requests in flight."""
        db = self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhooks-db")
        consumer_db = self._consumer_db = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="webhooks-consumer"
        )
        self._wake = asyncio.Event()
        poll = float(conf("WEBHOOKS_POLL_INTERVAL"))
        log.info("webhook worker %s started", self.worker_id)
        consumer = asyncio.create_task(self._consume_forever(stop, poll))
        try:
            async with self._transport() as transport:
                while not stop.is_set():
                    try:
                        busy = await self._cycle(transport)
                    except Exception:  # the database went away: try again shortly
                        log.exception("webhook cycle failed")
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), poll)
                        continue
                    if self._done:
                        continue  # requests ended while the round ran: record them now
                    if not busy or self._tasks:
                        await self._wait(stop, poll)
                await self._drain()
        finally:
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            loop = asyncio.get_running_loop()
            for executor in (db, consumer_db):
                await loop.run_in_executor(executor, connections.close_all)
                executor.shutdown(wait=True)
            self._db = self._consumer_db = self._wake = None
            log.info("webhook worker %s stopped", self.worker_id)

    def run_until_idle(
        self, *, timeout: float = 20.0, until: Callable[[], bool] | None = None
    ) -> None:
        """Cycles on the caller's thread until nothing is pending and due (or `until()`
        holds), at most `timeout` seconds; tests drive it."""
        db = _CallerThread()
        self._db = db
        result: Future[None] = Future()

        def loop() -> None:
            try:
                result.set_result(asyncio.run(self._until_idle(timeout, until)))
            except BaseException as exc:
                result.set_exception(exc)

        thread = threading.Thread(target=loop, name="webhooks-loop", daemon=True)
        thread.start()
        db.serve(result)
        thread.join()
        self._db = None
        result.result()

    async def _until_idle(self, timeout: float, until: Callable[[], bool] | None) -> None:
        deadline = time.monotonic() + timeout
        poll = min(float(conf("WEBHOOKS_POLL_INTERVAL")), 0.05)
        async with self._transport() as transport:
            while time.monotonic() < deadline:
                busy = await self._cycle(transport)
                if until is not None and await self._call(until) and not self._tasks:
                    break
                idle = until is None and not busy and not self._tasks and not self._done
                if idle and not await self._call(_pending_due_soon):
                    break
                await self._wait(None, poll)
            await self._drain()


def _record_and_claim(
    finished: list[AttemptResult], *, worker_id: str, limit: int = 0, lease: float = 0
) -> list[Claimed]:
    with data_atomic():
        now = timezone.now()
        attempts_record(finished, worker_id=worker_id, now=now)
        if limit < 1:
            return []
        return deliveries_claim(worker_id=worker_id, now=now, limit=limit, lease=lease)


def _pending_due_soon() -> bool:
    """Anything pending that comes due within a moment (a short retry in tests)."""
    return WebhookDelivery.objects.filter(
        state=DeliveryState.PENDING,
        endpoint__enabled=True,
        next_attempt_at__lte=timezone.now() + _SOON,
    ).exists()
