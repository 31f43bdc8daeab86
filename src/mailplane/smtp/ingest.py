"""Group commit: many SMTP sessions, one writer, one durable commit per batch.

Sessions hand their accepted message to `GroupCommitter.submit` and wait. One writer
coroutine takes whatever has arrived (up to `max_batch`), runs the blocking batch function
on its own worker thread (one thread: one DB connection, one writer, no lock contention),
and then resolves every waiting session at once. While a batch commits, the next one
fills up, so batches grow with load and cost no added wait when the server is idle.

The batch function returns one outcome per item (a result, or an exception for that item
alone, such as a refusal); if it raises, the whole batch failed: nothing in it was stored,
and no session may answer 250 yet. The items are then committed again one at a time, so
one message the database refuses (a poison item) fails alone instead of failing every
batch it lands in; each of those sessions gets its own outcome. A database that is down
fails them all, as it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from django.db import close_old_connections, connections

log = logging.getLogger("mailplane.smtp.ingest")

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


@dataclass(slots=True)
class BatchStats:
    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    retried_alone: int = 0  # items of failed batches committed again one at a time
    sizes: list[int] = field(default_factory=list)  # the last 1,000 batch sizes

    def record(self, size: int, *, failed: bool) -> None:
        self.batches += 1
        self.items += size
        self.failed_batches += failed
        self.sizes.append(size)
        del self.sizes[:-1000]


class GroupCommitter(Generic[T, R]):
    def __init__(
        self,
        batch_fn: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_batch: int = 200,
        name: str = "mailplane-ingest",
    ) -> None:
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _start(self) -> asyncio.Queue[_Pending[T, R]]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
            self._task = loop.create_task(self._run(self._queue), name=self._name)
        return self._queue

    async def submit(self, item: T) -> R:
        """Wait until `item` is committed with its batch; raise if it was not."""
        queue = self._start()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(item, future))
        return await future

    async def _run(self, queue: asyncio.Queue[_Pending[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            batch = [await queue.get()]
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                outcomes = await self._commit(loop, [p.item for p in batch])
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.cancel()
                raise
            self._resolve(batch, outcomes)

    async def _commit(
        self, loop: asyncio.AbstractEventLoop, items: list[T]
    ) -> Sequence[R | BaseException]:
        try:
            outcomes = await loop.run_in_executor(self._executor, self._call, items)
        except Exception as error:
            log.exception("batch of %d failed; nothing in it was stored", len(items))
            self.stats.record(len(items), failed=True)
            if len(items) == 1:
                return [error]
            return [await self._alone(loop, item) for item in items]
        self.stats.record(len(items), failed=len(outcomes) != len(items))
        if len(outcomes) != len(items):
            # Committed, but the outcomes cannot be matched to sessions (a bug): refuse
            # them all rather than guess; retrying would store everything twice.
            log.error("batch function returned %d outcomes for %d items", len(outcomes), len(items))
            return [RuntimeError("batch outcomes do not match the batch")] * len(items)
        return outcomes

    async def _alone(self, loop: asyncio.AbstractEventLoop, item: T) -> R | BaseException:
        """Commit one item of a failed batch on its own: its outcome, or why it failed."""
        self.stats.retried_alone += 1
        try:
            [outcome] = await loop.run_in_executor(self._executor, self._call, [item])
        except Exception as error:  # this item is (one of) what failed the batch
            log.warning("retried alone, an item failed again: %s", error)
            return error
        return outcome

    @staticmethod
    def _resolve(batch: list[_Pending[T, R]], outcomes: Sequence[R | BaseException]) -> None:
        for p, outcome in zip(batch, outcomes, strict=True):
            if p.future.done():  # the session went away; its message stays committed
                continue
            if isinstance(outcome, BaseException):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)

    def _call(self, items: list[T]) -> Sequence[R | BaseException]:
        # The same connection hygiene as a Django request: CONN_MAX_AGE decides reuse.
        close_old_connections()
        try:
            return self.batch_fn(items)
        finally:
            close_old_connections()

    async def aclose(self) -> None:
        """Stop the writer (pending sessions are cancelled) and close its DB connection."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, connections.close_all)
            executor.shutdown(wait=True)
