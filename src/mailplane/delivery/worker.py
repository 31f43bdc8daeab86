"""The delivery worker: claim → checklist → send concurrently (bounded) → record.

Database work (claims, checklist, records) runs on one dedicated thread, since the ORM is
synchronous; network work runs on the event loop. `run_once` does one pass synchronously
(tests, benchmarks); `run_forever` is the service, keeping a bounded window of recipients
in flight and claiming more as slots free up (Postfix qmgr's "active queue"), and renewing
the lease on every row it holds (claimed, not yet recorded) on a heartbeat of its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import socket
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import connections
from django.utils import timezone

from mailplane.delivery.claims import recipients_claim, recipients_renew
from mailplane.delivery.config import conf
from mailplane.delivery.limits import destination_slots
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
from mailplane.queue.models import QueuedRecipient

log = logging.getLogger("mailplane.delivery")
T = TypeVar("T")


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
        self._providers: dict[tuple[int, Any], Provider] = {}
        # Rows whose lease ran out and another worker took (the heartbeat finds them): not
        # sent from here any more, the new owner sends and records them.
        self._lost: set[int] = set()

    # -- synchronous steps (database thread) ----------------------------------------------

    def claim(
        self, *, now: datetime | None = None, limit: int | None = None
    ) -> list[QueuedRecipient]:
        return recipients_claim(
            worker_id=self.worker_id,
            limit=limit or self.batch_size,
            lease=self.lease,
            now=now or timezone.now(),
        )

    def renew(self, ids: set[int], *, now: datetime | None = None) -> set[int]:
        """Extend the lease on the held rows `ids`; return those no longer ours."""
        return recipients_renew(
            worker_id=self.worker_id, ids=ids, lease=self.lease, now=now or timezone.now()
        )

    def prepare(
        self, rows: Sequence[QueuedRecipient], *, sign: bool = True
    ) -> tuple[list[Outcome], list[Job]]:
        return batch_prepare(rows, sign=sign)

    def record(self, outcomes: Sequence[Outcome], *, now: datetime | None = None) -> None:
        if outcomes:
            outcomes_record(
                outcomes, worker_id=self.worker_id, now=now or timezone.now(), rng=self.rng
            )

    # -- sending (event loop) ---------------------------------------------------------------

    def _provider(self, job: Job) -> Provider:
        relay = job.row.message.relay_server
        assert relay is not None  # fail_if_no_relay ran
        key = (relay.pk, relay.updated_at)
        if key not in self._providers:
            self._providers[key] = provider_for(
                provider=relay.provider,
                configuration=dict(relay.configuration or {}),
                credentials=relay.credentials,
            )
        return self._providers[key]

    def _groups(self, jobs: Sequence[Job]) -> list[tuple[Provider, list[Job]]]:
        """(provider, chunk) pairs: per relay and destination domain, at most
        max_connections_per_domain chunks, each carried over one connection."""
        by_destination: dict[tuple[int, str], list[Job]] = defaultdict(list)
        for job in jobs:
            relay_id = job.row.message.relay_server_id or 0
            by_destination[(relay_id, job.row.rcpt_domain)].append(job)
        pairs = []
        for group in by_destination.values():
            provider = self._provider(group[0])
            for chunk in _chunks(group, provider.max_connections_per_domain):
                pairs.append((provider, chunk))
        return pairs

    async def _send_chunk(
        self, provider: Provider, chunk: list[Job], slots: asyncio.Semaphore
    ) -> list[Outcome]:
        async with slots:
            # Checked once the send can start: a chunk may have waited for a slot a while.
            chunk = [job for job in chunk if job.row.pk not in self._lost]
            if not chunk:
                return []
            try:
                results = await provider.send([j.envelope for j in chunk])
            except Exception as exc:  # a provider bug must not lose the claim's outcome
                log.exception("provider failed")
                results = [SendResult.temporary(f"451 4.3.0 internal error: {exc}")] * len(chunk)
        return [Outcome(job.row, result) for job, result in zip(chunk, results, strict=True)]

    async def send(self, jobs: Sequence[Job]) -> list[Outcome]:
        slots = asyncio.Semaphore(self.concurrency)
        tasks = [self._send_chunk(p, chunk, slots) for p, chunk in self._groups(jobs)]
        return [o for outcomes in await asyncio.gather(*tasks) for o in outcomes]

    # -- one pass, synchronously ----------------------------------------------------------------

    def run_once(self, *, now: datetime | None = None) -> int:
        """Claim one batch, deliver it and record it; return how many recipients it held.

        No heartbeat here (tests drive it on one database connection): a pass must end
        within the lease, or another worker may take its rows. The service renews."""
        rows = self.claim(now=now)
        done, jobs = self.prepare(rows)
        if jobs:

            async def send() -> list[Outcome]:
                try:
                    return await self.send(jobs)
                finally:  # idle SMTP connections belong to this pass's event loop
                    await providers_close(self._providers.values())

            done += asyncio.run(send())
        self.record(done, now=now)
        return len(rows)

    # -- the service ----------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-db")
        # The heartbeat has its own thread (and database connection): a long claim or record
        # on the database thread must not delay a renewal past the lease.
        beat = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delivery-lease")

        async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
            return await loop.run_in_executor(db, functools.partial(fn, *args, **kwargs))

        window = max(self.batch_size, self.concurrency * 4)
        slots = asyncio.Semaphore(self.concurrency)
        destinations = destination_slots(owner=self.worker_id)
        finished: list[Outcome] = []
        in_flight = 0
        tasks: set[asyncio.Task[None]] = set()
        wake = asyncio.Event()
        poll = float(conf("DELIVERY_POLL_INTERVAL"))
        # Rows claimed and not yet recorded: the heartbeat keeps their lease.
        held: set[int] = set()
        lost = self._lost
        lost.clear()

        async def heartbeat() -> None:
            """Renew every third of a lease, so two missed beats still keep the claim. On
            the event loop, so that a wedged loop stops renewing and its rows move on."""
            every = self.lease.total_seconds() / 3
            while True:
                await asyncio.sleep(every)
                ids = set(held)
                if not ids:
                    continue
                try:
                    gone = await loop.run_in_executor(beat, self.renew, ids)
                except Exception:  # the next beat retries; the lease has room for it
                    log.exception("lease renewal failed")
                    continue
                # Recorded meanwhile (no longer held) is not lost; taken by another worker is.
                gone &= held
                if gone:
                    log.warning("lost the claim on %d recipients to another worker", len(gone))
                    lost.update(gone)
                    held.difference_update(gone)

        async def deliver(provider: Provider, chunk: list[Job], key: tuple[int, str]) -> None:
            nonlocal in_flight
            # Per-destination politeness across batches and workers: at most N connections
            # per (relay, domain), however many batches and workers are in flight.
            try:
                await _sign_on_loop(chunk)
                async with destinations.slot(key, provider.max_connections_per_domain):
                    outcomes = await self._send_chunk(provider, chunk, slots)
                # Look `finished` up only now: the loop swaps in a fresh list while we wait.
                finished.extend(outcomes)
            except Exception:
                log.exception("delivery task failed; its rows wait for the lease to expire")
                held.difference_update(job.row.pk for job in chunk)
                raise
            finally:
                in_flight -= len(chunk)
                wake.set()

        async def record(batch: list[Outcome]) -> None:
            await call(self.record, batch)
            done = {o.row.pk for o in batch}
            held.difference_update(done)
            lost.difference_update(done)

        log.info("delivery worker %s started (lease %s)", self.worker_id, self.lease)
        renewing = asyncio.create_task(heartbeat())
        try:
            while not stop.is_set():
                if finished:
                    batch, finished = finished, []
                    await record(batch)
                room = window - in_flight
                claimed = (
                    await call(self.claim, limit=min(self.batch_size, room)) if room > 0 else []
                )
                # A row we still hold can only come back if its lease ran out unnoticed
                # (the claim just renewed it): it is in flight here already.
                rows = [r for r in claimed if r.pk not in held]
                held.update(r.pk for r in rows)
                if rows:
                    done, jobs = await call(self.prepare, rows, sign=False)
                    finished.extend(done)
                    # Every row is an outcome or a job; one that is neither must not be
                    # renewed for ever (it would never be tried again while we live).
                    accounted = {o.row.pk for o in done} | {j.row.pk for j in jobs}
                    held.difference_update(r.pk for r in rows if r.pk not in accounted)
                    for provider, chunk in self._groups(jobs):
                        in_flight += len(chunk)
                        key = (chunk[0].row.message.relay_server_id or 0, chunk[0].row.rcpt_domain)
                        task = asyncio.create_task(deliver(provider, chunk, key))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                if claimed and len(claimed) == min(self.batch_size, room):
                    continue  # probably more due: claim again at once
                # Idle (or window full): sleep until a send finishes, stop, or the poll tick.
                wake.clear()
                waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if finished:
                await record(finished)
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await destinations.close()
            await providers_close(self._providers.values())
            await call(connections.close_all)
            await loop.run_in_executor(beat, connections.close_all)
            beat.shutdown(wait=True)
            db.shutdown(wait=True)
            log.info("delivery worker %s stopped", self.worker_id)
