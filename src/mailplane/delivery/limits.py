"""Per-destination connection caps that hold across every delivery worker.

Postfix enforces `default_destination_concurrency_limit` in its one queue manager; our
workers are many processes on many hosts, so the count lives in Redis when one is
configured (settings.MAILPLANE["REDIS_URL"]): each open connection to a destination holds
a leased entry in a sorted set, scored by when the lease ends, so a worker that dies
mid-delivery frees its slots when the lease runs out instead of blocking the domain for
ever. Without Redis (embedded mode: one worker) the caps are in-process semaphores.

If Redis stops answering, delivery goes on under the in-process caps (and says so in the
log): a slower, less polite queue is better than a stalled one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import redis.asyncio
import redis.exceptions
from django.conf import settings

from mailplane.delivery.config import conf

log = logging.getLogger("mailplane.delivery")

Destination = tuple[int, str]  # (relay server id, recipient domain)

# Drop expired holders, then take a slot if fewer than the cap hold one. The clock is the
# Redis server's (TIME), so workers on hosts with skewed clocks agree on lease ends.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


# Push the lease end of every slot this worker still holds (KEYS[i] holds ARGV[i + 1]).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return #KEYS
"""


class DestinationSlots(Protocol):
    def slot(self, destination: Destination, cap: int) -> AbstractAsyncContextManager[None]:
        """Hold one of `cap` connection slots to `destination` (an async context manager)."""
        ...

    async def close(self) -> None: ...


class LocalSlots:
    """One semaphore per destination, for this process only."""

    def __init__(self) -> None:
        self._semaphores: dict[Destination, asyncio.Semaphore] = {}

    @asynccontextmanager
    async def slot(self, destination: Destination, cap: int) -> AsyncIterator[None]:
        semaphore = self._semaphores.get(destination)
        if semaphore is None:
            semaphore = self._semaphores[destination] = asyncio.Semaphore(cap)
        async with semaphore:
            yield

    async def close(self) -> None:
        self._semaphores.clear()


class SharedSlots:
    """Leased slots in Redis, shared by every worker that points at the same server.

    Leases are short and renewed while held (every third of a lease), so a delivery may
    take as long as it needs while a crashed worker's slots come back within one lease.
    """

    def __init__(self, url: str, *, owner: str, lease_seconds: float) -> None:
        self._client = redis.asyncio.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._lease_ms = int(lease_seconds * 1000)
        self._tokens = itertools.count()
        self._held: dict[str, str] = {}  # token -> key
        self._renewer: asyncio.Task[None] | None = None
        self._fallback = LocalSlots()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            if not self._held:
                continue
            held = list(self._held.items())
            try:
                await self._renew(
                    keys=[key for _, key in held],
                    args=[self._lease_ms, *(token for token, _ in held)],
                )
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("destination limits: lease renewal failed (%s)", exc)

    @staticmethod
    def key(destination: Destination) -> str:
        relay_id, domain = destination
        return f"mailplane:delivery:slots:{relay_id}:{domain}"

    @asynccontextmanager
    async def slot(self, destination: Destination, cap: int) -> AsyncIterator[None]:
        key = self.key(destination)
        token = f"{self._owner}:{next(self._tokens)}"
        wait = 0.02
        try:
            while not await self._acquire(keys=[key], args=[cap, self._lease_ms, token]):
                await asyncio.sleep(wait)  # another worker holds every slot: poll, backing off
                wait = min(wait * 2, 0.5)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            log.warning("destination limits: Redis unavailable (%s); using this worker's", exc)
            async with self._fallback.slot(destination, cap):
                yield
            return
        self._held[token] = key
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever())
        try:
            yield
        finally:
            del self._held[token]
            try:
                await self._client.zrem(key, token)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                log.warning("destination limits: slot release failed (%s); lease will end", exc)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self._client.aclose()


def destination_slots(*, owner: str) -> DestinationSlots:
    """Shared slots when Redis is configured, else this process's own."""
    url = str(settings.MAILPLANE.get("REDIS_URL") or "")
    if url:
        return SharedSlots(
            url, owner=owner, lease_seconds=float(conf("DELIVERY_SLOT_LEASE_SECONDS"))
        )
    return LocalSlots()
