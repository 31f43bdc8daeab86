"""The delivery worker: claim → checklist → sign → send concurrently (bounded) → record.

One code path. `_Run` is the service's state (rows held, sends in flight, the lease
heartbeat, per-destination slots) and `_Run.cycle` one turn of its loop: record what
finished, claim as many rows as the window has room for, run the checklist, start one
send task per (relay, destination) chunk (DKIM-signed on the event loop, under the
destination's connection cap). `run_forever` (the service: `mailplane serve`,
`python -m mailplane.delivery`) repeats the cycle; `run_once` (tests) is one cycle and
then the same drain the service does when it stops. Both hold a heartbeat that renews the
lease on every row claimed and not yet recorded (`tests/delivery/test_one_path.py` fails
if the two stop sharing the cycle).

The ORM is synchronous, so database work runs off the event loop, on one thread: in the
service a dedicated thread (and the heartbeat its own, so that a long claim or record does
not delay a renewal past the lease); in `run_once` the caller's thread, renewals included,
so that a test's transaction sees the claims and writes the records, while the loop runs
on a thread of its own. (A pass is one batch: its record is short, a renewal waits for it.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import random
import socket
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from django.db import connections
from django.utils import timezone

from mailplane.delivery.claims import recipients_claim, recipients_renew
from mailplane.delivery.config import conf
from mailplane.delivery.limits import Destination
from mailplane.delivery.politeness import (
    PoliteKey,
    polite_slots,
    politeness_enabled,
    throttle_hold_reply,
    throttle_reply,
)
from mailplane.delivery.processor import (
    Job,
    Outcome,
    batch_prepare,
    jobs_signed,
    outcomes_record,
    sign_requests,
)
from mailplane.delivery.providers import Provider, provider_for, providers_close
from mailplane.delivery.results import SendResult
from mailplane.delivery.signing import sign_many
from mailplane.pools.selectors import Source
from mailplane.queue.models import Priority, QueuedRecipient, WaitReason

log = logging.getLogger("mailplane.delivery")
T = TypeVar("T")
P = ParamSpec("P")


# Opening a connection (TCP, EHLO, STARTTLS) costs more than a transaction on an open
# one: only spread a destination's mail over several connections when each gets this many.
MESSAGES_PER_CONNECTION = 10


async def _sign_on_loop(chunk: list[Job]) -> None:
    """DKIM-sign on the event loop, yielding between messages.

    Not in a thread pool, although OpenSSL releases the GIL for the RSA step: a signing
    thread must win the GIL back from the busy event loop after every signature, and that
    hand-off cost more than the signature (bench/delivery.py: 687-767 msg/s with two
    signing threads, 887-988 signing here; bench/RESULTS.md).
    """
    todo = sign_requests(chunk)
    signed: dict[int, bytes] = {}
    for message_id, request in todo.items():
        [signed[message_id]] = sign_many([request])
        await asyncio.sleep(0)  # let other connections move between signatures
    jobs_signed(chunk, signed)


def _chunks(jobs: list[Job], parts: int) -> list[list[Job]]:
    """Split a destination's jobs over at most `parts` connections, in order."""
    parts = max(1, min(parts, -(-len(jobs) // MESSAGES_PER_CONNECTION)))
    size = -(-len(jobs) // parts)
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def _bulk(chunk: list[Job]) -> int:
    return sum(1 for job in chunk if job.row.priority == Priority.BULK)


class _CallerThread(Executor):
    """Runs what is submitted on the thread that calls `serve`, until `serve`'s future is
    done: `run_once`'s database thread is its caller's, whose connection (and, in a test,
    open transaction) the worker's claims and records then use. The idea of asgiref's
    CurrentThreadExecutor, whose constructor differs between asgiref versions."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._work = queue.SimpleQueue()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        self._work.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def serve(self, until: Future[Any]) -> None:
        until.add_done_callback(lambda _: self._work.put(None))
        while (item := self._work.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue  # its awaiter was cancelled (the heartbeat, at the end of a run)
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the awaiting task, as a pool does
                future.set_exception(exc)


class _Run:
    """One run of the worker: what the service loop keeps between cycles.

    `held` is every row claimed and not yet recorded (the heartbeat renews their lease);
    `lost` the held rows another worker took after our lease ran out (the heartbeat finds
    them; a send that has not started skips them, the new owner sends and records them).
    """

    def __init__(
        self,
        worker: DeliveryWorker,
        *,
        db: Executor,
        beat: Executor,
        now: datetime | None,
    ) -> None:
        self.worker = worker
        self.db = db
        self.beat = beat
        self.now = now  # a fixed clock (tests); None: the real one
        self.window = max(worker.batch_size, worker.concurrency * 4)
        # Bulk rows (broadcast streams) may hold at most this much of the window: the rest
        # is kept for interactive mail, which the claim also takes first (claims.py), so a
        # transactional message waits behind at most `bulk_window` broadcast sends however
        # long the broadcast backlog is (docs/architecture.md, "Two lanes").
        self.bulk_window = self.window - max(1, self.window // 4)
        self.bulk_in_flight = 0
        self.slots = asyncio.Semaphore(worker.concurrency)
        # Per (relay, domain) connection caps, and per (MX group, source) politeness.
        self.destinations = polite_slots(owner=worker.worker_id)
        self.polite = politeness_enabled()
        self.finished: list[Outcome] = []
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.held: set[int] = set()
        self.lost: set[int] = set()
        self.more_due = False  # the last claim was full: claim again without waiting

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db, functools.partial(fn, *args, **kwargs))

    # -- the cycle ------------------------------------------------------------------------

    async def cycle(self) -> int:
        """Record what finished, claim what the window has room for, start its sends;
        return how many rows the claim returned."""
        worker = self.worker
        if self.finished:
            batch, self.finished = self.finished, []
            await self.record(batch)
        room = self.window - self.in_flight
        limit = min(worker.batch_size, room)
        bulk_limit = max(0, min(limit, self.bulk_window - self.bulk_in_flight))
        claimed = (
            await self.call(worker.claim, now=self.now, limit=limit, bulk_limit=bulk_limit)
            if room > 0
            else []
        )
        # A row we still hold can only come back if its lease ran out unnoticed (the claim
        # just renewed it): it is in flight here already.
        rows = [r for r in claimed if r.pk not in self.held]
        self.held.update(r.pk for r in rows)
        if rows:
            done, jobs = await self.call(worker.prepare, rows, now=self.now)
            self.finished.extend(done)
            # Every row is an outcome or a job; one that is neither must not be renewed for
            # ever (it would never be tried again while we live).
            accounted = {o.row.pk for o in done} | {j.row.pk for j in jobs}
            self.held.difference_update(r.pk for r in rows if r.pk not in accounted)
            for provider, chunk in worker.groups(jobs):
                self.in_flight += len(chunk)
                self.bulk_in_flight += _bulk(chunk)
                key = (chunk[0].row.message.relay_server_id or 0, chunk[0].row.rcpt_domain)
                task = asyncio.create_task(self.deliver(provider, chunk, key))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        self.more_due = bool(claimed) and len(claimed) == limit
        return len(claimed)

    async def idle(self, stop: asyncio.Event, poll: float) -> None:
        """Sleep until a send finishes, `stop` is set, or the poll tick."""
        self.wake.clear()
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()

    async def drain(self) -> None:
        """Wait for the sends in flight and record everything that finished."""
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.finished:
            batch, self.finished = self.finished, []
            await self.record(batch)

    # -- the steps --------------------------------------------------------------------------

    async def deliver(self, provider: Provider, chunk: list[Job], key: Destination) -> None:
        try:
            await _sign_on_loop(chunk)
            polite = await self.polite_key(provider, chunk) if self.polite else None
            if polite is not None:
                outcomes = await self.send_politely(provider, chunk, key, polite)
            else:
                # Per-destination caps across batches and workers: at most N connections
                # per (relay, domain), however many batches and workers are in flight.
                async with self.destinations.slot(key, provider.max_connections_per_domain):
                    outcomes = self.held_unsent(await self.send_chunk(provider, chunk), None)
            # Look `finished` up only now: the cycle swaps in a fresh list while we wait.
            self.finished.extend(outcomes)
        except Exception:
            log.exception("delivery task failed; its rows wait for the lease to expire")
            self.held.difference_update(job.row.pk for job in chunk)
            raise
        finally:
            self.in_flight -= len(chunk)
            self.bulk_in_flight -= _bulk(chunk)
            self.wake.set()

    def clock(self) -> datetime:
        return self.now or timezone.now()

    async def polite_key(self, provider: Provider, chunk: list[Job]) -> PoliteKey | None:
        """The chunk's (MX group, source address), for providers that have MX groups (the
        native one; a smarthost or an HTTP API is one peer with its own limits)."""
        group_of = getattr(provider, "destination_group", None)
        if group_of is None:
            return None
        group = await group_of(chunk[0].row.rcpt_domain)
        if group is None:
            return None
        source = chunk[0].source
        return PoliteKey(group, source.address if source else provider.source_name)  # type: ignore[attr-defined]

    async def send_politely(
        self, provider: Provider, chunk: list[Job], key: Destination, polite: PoliteKey
    ) -> list[Outcome]:
        """Send what the group's limits allow now over one connection; the rest of the
        chunk waits in the queue, unattempted, until the group may take more."""
        now = self.clock()
        async with self.destinations.polite(
            key,
            provider.max_connections_per_domain,
            polite,
            want=len(chunk),
            now=int(self.now.timestamp() * 1000) if self.now is not None else None,
        ) as grant:
            go, wait = chunk[: grant.granted], chunk[grant.granted :]
            outcomes = await self.send_chunk(provider, go) if go else []
            grant.throttled = any(throttle_reply(o.result) for o in outcomes)
        if grant.throttled:
            log.info(
                "politeness: %s throttles %s until %s", polite.group, polite.source, grant.until
            )
        until = datetime.fromtimestamp(grant.until / 1000, UTC) if grant.until else None
        if until is None and wait:  # not expected (a partial grant says when): not lost
            until = now + timedelta(seconds=1)
        if until is not None:
            reply = throttle_hold_reply(polite, until)
            for outcome in outcomes:
                if not outcome.result.attempted:  # what the provider held back
                    outcome.result = SendResult.not_attempted(reply, outcome.result.remote_host)
            outcomes += [
                Outcome(
                    job.row,
                    SendResult.not_attempted(reply, "local"),
                    retry_at=until,
                    source=job.source,
                    hold=WaitReason.THROTTLED,
                )
                for job in wait
            ]
        return self.held_unsent(outcomes, until)

    def held_unsent(self, outcomes: list[Outcome], until: datetime | None) -> list[Outcome]:
        """Messages a provider did not offer because the receiver had just asked us to
        slow down wait without an attempt (no backoff, no bounce class), until the hold."""
        for outcome in outcomes:
            if not outcome.result.attempted and outcome.retry_at is None:
                outcome.retry_at = until or self.clock() + timedelta(
                    seconds=float(conf("DELIVERY_THROTTLE_HOLD_SECONDS"))
                )
                outcome.hold = WaitReason.THROTTLED  # the queue view's "throttled, until"
        return outcomes

    async def send_chunk(self, provider: Provider, chunk: list[Job]) -> list[Outcome]:
        async with self.slots:
            # Checked once the send can start: a chunk may have waited for a slot a while.
            chunk = [job for job in chunk if job.row.pk not in self.lost]
            if not chunk:
                return []
            try:
                results = await provider.send([j.envelope for j in chunk])
            except Exception as exc:  # a provider bug must not lose the claim's outcome
                log.exception("provider failed")
                results = [SendResult.temporary(f"451 4.3.0 internal error: {exc}")] * len(chunk)
        return [
            Outcome(job.row, result, source=job.source)
            for job, result in zip(chunk, results, strict=True)
        ]

    async def record(self, batch: list[Outcome]) -> None:
        await self.call(self.worker.record, batch, now=self.now)
        done = {o.row.pk for o in batch}
        self.held.difference_update(done)
        self.lost.difference_update(done)

    async def heartbeat(self) -> None:
        """Renew every third of a lease, so two missed beats still keep the claim. On the
        event loop, so that a wedged loop stops renewing and its rows move on."""
        loop = asyncio.get_running_loop()
        every = self.worker.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            ids = set(self.held)
            if not ids:
                continue
            renew = functools.partial(self.worker.renew, ids, now=self.now)
            try:
                gone = await loop.run_in_executor(self.beat, renew)
            except Exception:  # the next beat retries; the lease has room for it
                log.exception("lease renewal failed")
                continue
            # Recorded meanwhile (no longer held) is not lost; taken by another worker is.
            gone &= self.held
            if gone:
                log.warning("lost the claim on %d recipients to another worker", len(gone))
                self.lost.update(gone)
                self.held.difference_update(gone)


class DeliveryWorker:
    def __init__(
        self,
        *,
        worker_id: str | None = None,
        batch_size: int | None = None,
        lease: timedelta | None = None,
        concurrency: int | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.batch_size = batch_size or int(conf("DELIVERY_BATCH_SIZE"))
        self.lease = lease or timedelta(seconds=float(conf("DELIVERY_LEASE_SECONDS")))
        self.concurrency = concurrency or int(conf("DELIVERY_CONCURRENCY"))
        self.rng = rng
        self._providers: dict[tuple[int, Any, Source | None], Provider] = {}

    # -- database steps (run on the database thread) ----------------------------------------

    def claim(
        self,
        *,
        now: datetime | None = None,
        limit: int | None = None,
        bulk_limit: int | None = None,
    ) -> list[QueuedRecipient]:
        return recipients_claim(
            worker_id=self.worker_id,
            limit=limit or self.batch_size,
            lease=self.lease,
            now=now or timezone.now(),
            bulk_limit=bulk_limit,
        )

    def renew(self, ids: set[int], *, now: datetime | None = None) -> set[int]:
        """Extend the lease on the held rows `ids`; return those no longer ours."""
        return recipients_renew(
            worker_id=self.worker_id, ids=ids, lease=self.lease, now=now or timezone.now()
        )

    def prepare(
        self, rows: Sequence[QueuedRecipient], *, now: datetime | None = None
    ) -> tuple[list[Outcome], list[Job]]:
        """The checklist; DKIM is left to the send task (signed on the event loop)."""
        return batch_prepare(rows, now=now)

    def record(self, outcomes: Sequence[Outcome], *, now: datetime | None = None) -> None:
        if outcomes:
            outcomes_record(
                outcomes, worker_id=self.worker_id, now=now or timezone.now(), rng=self.rng
            )

    # -- grouping for the sends ---------------------------------------------------------------

    def _provider(self, job: Job) -> Provider:
        relay = job.row.message.relay_server
        assert relay is not None  # fail_if_no_relay ran
        key = (relay.pk, relay.updated_at, job.source)
        if key not in self._providers:
            configuration = dict(relay.configuration or {})
            if job.source is not None:
                # The pool's address and its name replace the relay's own (SMTP relays
                # bind them; HTTP providers send from their own addresses and ignore them).
                configuration["source_address"] = job.source.address
                configuration["helo_name"] = job.source.helo_name
            self._providers[key] = provider_for(
                provider=relay.provider,
                configuration=configuration,
                credentials=relay.credentials,
            )
        return self._providers[key]

    def groups(self, jobs: Sequence[Job]) -> list[tuple[Provider, list[Job]]]:
        """(provider, chunk) pairs: per relay and destination domain, at most
        max_connections_per_domain chunks, each carried over one connection."""
        by_destination: dict[tuple[int, Source | None, str], list[Job]] = defaultdict(list)
        for job in jobs:
            relay_id = job.row.message.relay_server_id or 0
            by_destination[(relay_id, job.source, job.row.rcpt_domain)].append(job)
        pairs = []
        for group in by_destination.values():
            provider = self._provider(group[0])
            for chunk in _chunks(group, provider.max_connections_per_domain):
                pairs.append((provider, chunk))
        return pairs

    # -- running ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _running(
        self, *, db: Executor, beat: Executor, now: datetime | None = None
    ) -> AsyncIterator[_Run]:
        """A run with its heartbeat; on the way out (stop, or the end of run_once) wait for
        the sends in flight, record them, and close what the run opened on this loop."""
        run = _Run(self, db=db, beat=beat, now=now)
        renewing = asyncio.create_task(run.heartbeat())
        try:
            yield run
        finally:
            try:
                await run.drain()
            finally:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
                await run.destinations.close()
                # Idle connections belong to this loop (run_once has one per pass).
                await providers_close(self._providers.values())

    async def run_batch(self, *, db: Executor, now: datetime | None = None) -> int:
        """One cycle of the service loop and its drain: claim one batch, deliver it under the
        destination caps, record it; return how many recipients the claim returned."""
        async with self._running(db=db, beat=db, now=now) as run:
            return await run.cycle()

    def run_once(self, *, now: datetime | None = None) -> int:
        """`run_batch` with this thread as the database thread and an event loop on a thread
        of its own (tests: their transaction sees every claim and record). `now` fixes the
        clock of the claim, the renewals and the record."""
        db = _CallerThread()
        result: Future[int] = Future()

        def loop() -> None:
            try:
                result.set_result(asyncio.run(self.run_batch(db=db, now=now)))
            except BaseException as exc:
                result.set_exception(exc)

        # A daemon: should this thread stop serving (KeyboardInterrupt), the loop thread
        # waits on it for ever and must not hold the interpreter's exit too.
        thread = threading.Thread(target=loop, name="delivery-loop", daemon=True)
        thread.start()
        db.serve(result)
        thread.join()
        return result.result()

    async def run_forever(self, stop: asyncio.Event) -> None:
        """The service: the same cycle until `stop`, then the same drain."""
        loop = asyncio.get_running_loop()
        db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-db")
        # The heartbeat has its own thread (and database connection): a long claim or record
        # on the database thread must not delay a renewal past the lease.
        beat = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-lease")
        poll = float(conf("DELIVERY_POLL_INTERVAL"))
        log.info("delivery worker %s started (lease %s)", self.worker_id, self.lease)
        try:
            async with self._running(db=db, beat=beat) as run:
                while not stop.is_set():
                    await run.cycle()
                    if not run.more_due:  # idle, or the window is full
                        await run.idle(stop, poll)
        finally:
            await loop.run_in_executor(db, connections.close_all)
            await loop.run_in_executor(beat, connections.close_all)
            beat.shutdown(wait=True)
            db.shutdown(wait=True)
            log.info("delivery worker %s stopped", self.worker_id)
