"""The webhook service: consume events into deliveries, claim due ones, POST them signed,
record every attempt. `run_forever` is what `mailplane serve` starts ("webhooks",
`python -m mailplane.webhooks`); `run_until_idle` is the same cycle for tests.

As delivery/worker.py: the ORM is synchronous, so database work runs on one thread of
its own in the service (the caller's thread in `run_until_idle`, with the loop on a thread
of its own: delivery/worker.py's `_CallerThread`, so a test's transaction sees every
row), the HTTP requests on the event loop with httpx. The lease
outlasts a request (at least twice the timeout), so no heartbeat is needed: a request
that ends is recorded before its lease does.
"""

from __future__ import annotations

import asyncio
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

import httpx
from django.db import connections
from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import ValidationFailed
from mailplane.delivery.worker import _CallerThread
from mailplane.webhooks.config import conf
from mailplane.webhooks.consumer import events_consume
from mailplane.webhooks.guard import AddressRefused, target_resolve, url_check
from mailplane.webhooks.models import DeliveryState, WebhookDelivery
from mailplane.webhooks.outbox import AttemptResult, Claimed, attempts_record, deliveries_claim
from mailplane.webhooks.signing import headers as signed_headers

log = logging.getLogger("mailplane.webhooks")
_SOON = timedelta(seconds=2)
GATHER = 0.01  # seconds: how long a round waits for more requests to end
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
        self._tasks: set[asyncio.Task[AttemptResult]] = set()
        self._done: list[AttemptResult] = []

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._db is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._db, lambda: fn(*args, **kwargs)
        )

    async def _cycle(self, client: httpx.AsyncClient) -> bool:
        """One round: read new events, record what finished and start what is due (one
        transaction: one commit per round, however many requests ended).
        True when there was anything to do."""
        busy = False
        while await self._call(events_consume):
            busy = True
        finished, self._done = self._done, []
        room = self.concurrency - len(self._tasks)
        claimed = await self._call(
            _record_and_claim,
            finished,
            worker_id=self.worker_id,
            limit=min(room, int(conf("WEBHOOKS_BATCH_SIZE"))),
            lease=self.lease,
        )
        for item in claimed:
            task = asyncio.create_task(self._post(client, item))
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
        if waiters:
            await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            if self._tasks and not (stopper is not None and stopper.done()):
                await asyncio.wait([*self._tasks], timeout=GATHER)
        else:
            await asyncio.sleep(poll)
        if stopper is not None and not stopper.done():
            stopper.cancel()

    async def _post(self, client: httpx.AsyncClient, item: Claimed) -> AttemptResult:
        started_at = timezone.now()
        start = time.monotonic()

        def result(**fields: Any) -> AttemptResult:
            latency = int((time.monotonic() - start) * 1000)
            return AttemptResult(item.delivery_id, item.endpoint_id, started_at, latency, **fields)

        body = item.body.encode()
        try:
            target = url_check(item.url)
            address = await target_resolve(target)
            url = httpx.URL(item.url)
            host_header = url.netloc.decode("ascii")
            pinned = url.copy_with(host=str(address))
            headers = {
                **signed_headers(
                    secrets_=item.secrets,
                    webhook_id=item.webhook_id,
                    timestamp=int(time.time()),
                    body=body,
                ),
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "host": host_header,
            }
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = client.build_request(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            )
            response = await client.send(request, stream=True)
            try:
                excerpt = await self._excerpt(response)
            finally:
                await response.aclose()
            return result(
                status_code=response.status_code,
                excerpt=excerpt,
                retry_after=response.headers.get("retry-after"),
            )
        except (AddressRefused, ValidationFailed) as exc:  # the guard's refusals
            return result(error=str(exc))
        except httpx.TimeoutException:
            return result(error=f"timed out after {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return result(error=f"{type(exc).__name__}: {exc}"[:500])
        except Exception as exc:  # a bad stored URL, an unexpected failure: an attempt too
            log.exception("webhook delivery %s failed unexpectedly", item.delivery_id)
            return result(error=f"{type(exc).__name__}: {exc}"[:500])

    async def _excerpt(self, response: httpx.Response) -> str:
        """The first bytes of the answer (decoded, if compressed), never the whole of a
        huge one: reading stops there."""
        kept = bytearray()
        async for chunk in response.aiter_bytes():
            kept += chunk
            if len(kept) >= self.excerpt:
                break
        return bytes(kept[: self.excerpt]).decode("utf-8", "replace")

    def _client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=self.concurrency),
            # h11 writes the head and the body apart: without NODELAY the body waits for
            # the receiver's delayed ACK of the head (Nagle), up to 40 ms per request.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        return httpx.AsyncClient(
            transport=transport,
            timeout=self.timeout,
            follow_redirects=False,  # a redirect could lead past the guard
            trust_env=False,  # no proxy from the environment: the guard checks the target
        )

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.wait([*self._tasks])
        if self._done:
            finished, self._done = self._done, []
            await self._call(_record_and_claim, finished, worker_id=self.worker_id)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """The service: cycles until `stop`, then waits for the requests in flight."""
        db = self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhooks-db")
        poll = float(conf("WEBHOOKS_POLL_INTERVAL"))
        log.info("webhook worker %s started", self.worker_id)
        try:
            async with self._client() as client:
                while not stop.is_set():
                    try:
                        busy = await self._cycle(client)
                    except Exception:  # the database went away: try again shortly
                        log.exception("webhook cycle failed")
                        busy = False
                    if not busy or self._tasks:
                        await self._wait(stop, poll)
                await self._drain()
        finally:
            await asyncio.get_running_loop().run_in_executor(db, connections.close_all)
            db.shutdown(wait=True)
            self._db = None
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
        async with self._client() as client:
            while time.monotonic() < deadline:
                busy = await self._cycle(client)
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
