"""Request rate limits per API key and per client address, advertised in the IETF
`RateLimit-Policy` / `RateLimit` header fields (draft-ietf-httpapi-ratelimit-headers-10).

Every request under /api/ (and the compatible /mailbox/ paths) spends one unit from two
quotas: its client address's (IPv6 per /64, as the auth-failure throttle counts) and, when
it presents credentials, the
credential's (a hash of the Authorization value, so the count needs no database lookup and
an unknown key has a quota of its own that runs out like any other). Past either quota the
answer is 429 in the error shape with `Retry-After`; every answer carries both headers, so
a client can slow down before it is refused:

    RateLimit-Policy: "key";q=12000;w=60, "ip";q=24000;w=60
    RateLimit: "key";r=11999;t=42, "ip";r=23999;t=42

Fixed windows (the draft's `w`, aligned to the clock) rather than a sliding log: the
remaining quota `r` and the reset `t` are exact, and a counter per window is one INCR. The
counts live in Redis when settings.MAILPLANE["REDIS_URL"] is set (one script call per
request for both quotas, on the Redis server's clock, so every web process and host agrees),
else in this process (embedded mode: the README says so). If Redis stops answering, this
process counts alone until it answers again (logged once), as the other limiters do.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from mailplane.api.errors import domain_error_json
from mailplane.api.throttling import client_key, retry_after_seconds
from mailplane.core.errors import RateLimited
from mailplane.core.shared_redis import FallibleRedis

log = logging.getLogger("mailplane.api.ratelimits")

KEY_PREFIX = "mailplane:api-rate"
# The API and the compatible service's paths (/mailbox/, the CSV exports); not the docs'
# static files, /metrics or the providers' signed webhooks.
RATE_LIMITED_PATHS = ("/api/", "/mailbox/")
_MAX_LOCAL_COUNTERS = 200_000  # bounded memory however many keys and addresses arrive


@dataclass(frozen=True)
class Quota:
    """A policy of the draft: `q` units per window of `w` seconds."""

    name: str
    limit: int
    window: int

    @classmethod
    def parse(cls, name: str, text: str) -> Quota | None:
        """ "6000/60" → 6000 requests per 60 s; "" or "0" → no such limit."""
        text = text.strip()
        if not text or text == "0":
            return None
        count, _, seconds = text.partition("/")
        quota = cls(name, int(count), int(seconds or 60))
        if quota.limit < 1 or quota.window < 1:
            raise ValueError(f"rate limit {name}: {text!r} is not <requests>/<seconds>")
        return quota


@dataclass(frozen=True)
class Spent:
    quota: Quota
    used: int  # units spent in the current window, this request's included
    reset: float  # seconds until the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.quota.limit - self.used)

    @property
    def exceeded(self) -> bool:
        return self.used > self.quota.limit


class Counters(Protocol):
    def spend(self, charges: Sequence[tuple[Quota, str]]) -> list[Spent]: ...

    def reset(self) -> None: ...


class LocalCounters:
    """One process's counters (embedded mode, and the fallback while Redis is away)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # (policy, partition) -> (window index, units spent in it, window seconds)
        self._counts: dict[tuple[str, str], tuple[int, int, int]] = {}

    def spend(self, charges: Sequence[tuple[Quota, str]]) -> list[Spent]:
        now = self._clock()
        spent = []
        with self._lock:
            if len(self._counts) >= _MAX_LOCAL_COUNTERS:
                self._prune(now)
            for quota, partition in charges:
                slot = int(now // quota.window)
                held = self._counts.get((quota.name, partition))
                used = held[1] + 1 if held is not None and held[0] == slot else 1
                self._counts[(quota.name, partition)] = (slot, used, quota.window)
                spent.append(Spent(quota, used, (slot + 1) * quota.window - now))
        return spent

    def _prune(self, now: float) -> None:
        """Drop the counters of ended windows; if all are current (a flood of partitions),
        start over rather than grow."""
        self._counts = {k: v for k, v in self._counts.items() if (v[0] + 1) * v[2] > now}
        if len(self._counts) >= _MAX_LOCAL_COUNTERS:
            self._counts.clear()

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


# KEYS: one per charge; ARGV: window (ms) per charge. Returns used, ms to reset, per charge.
_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[i])
  local slot = math.floor(now / window)
  local counter = key .. ':' .. slot
  local used = redis.call('INCR', counter)
  if used == 1 then redis.call('PEXPIRE', counter, window) end
  out[#out + 1] = used
  out[#out + 1] = (slot + 1) * window - now
end
return out
"""


class SharedCounters:
    """The same counters in Redis, shared by every process that uses it."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = KEY_PREFIX,
        timeout: float = 0.5,
        retry_redis_after: float = 5.0,
    ) -> None:
        self.prefix = prefix
        self.retry_redis_after = retry_redis_after
        self.fallback = LocalCounters()
        self._shared = FallibleRedis(
            url, log=log, what="API rate limits", timeout=timeout, retry_after=retry_redis_after
        )
        self._client = self._shared.client
        self._spend = self._shared.script(_SPEND)

    def spend(self, charges: Sequence[tuple[Quota, str]]) -> list[Spent]:
        keys = [f"{self.prefix}:{q.name}:{partition}" for q, partition in charges]
        windows = [q.window * 1000 for q, _ in charges]
        shared, answer = self._shared.call(lambda: self._spend(keys=keys, args=windows))
        if not shared or answer is None:
            return self.fallback.spend(charges)
        return [
            Spent(quota, int(answer[2 * i]), int(answer[2 * i + 1]) / 1000)
            for i, (quota, _) in enumerate(charges)
        ]

    def reset(self) -> None:
        self.fallback.reset()
        self._shared.keys_delete(self.prefix)


def configured_quotas() -> list[Quota]:
    conf = settings.MAILPLANE
    quotas = [
        Quota.parse("key", str(conf["API_RATE_PER_KEY"])),
        Quota.parse("ip", str(conf["API_RATE_PER_IP"])),
    ]
    return [q for q in quotas if q is not None]


@functools.lru_cache(maxsize=4)
def _counters_for(url: str) -> Counters:
    return SharedCounters(url) if url else LocalCounters()


def rate_counters() -> Counters:
    return _counters_for(str(settings.MAILPLANE.get("REDIS_URL") or ""))


def _credential_partition(request: HttpRequest) -> str | None:
    presented = request.headers.get("Authorization", "")
    if not presented:
        return None
    # A digest, never the key itself, in Redis and in memory.
    return hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _headers(spent: Sequence[Spent]) -> dict[str, str]:
    """The draft's structured fields (RFC 9651 lists of items with parameters)."""
    return {
        "RateLimit-Policy": ", ".join(
            f'"{s.quota.name}";q={s.quota.limit};w={s.quota.window}' for s in spent
        ),
        "RateLimit": ", ".join(
            f'"{s.quota.name}";r={s.remaining};t={math.ceil(s.reset)}' for s in spent
        ),
    }


class RateLimitMiddleware:
    """Spends the request's units before any view runs (so a refused request costs one
    counter call, not an authentication), and labels every answer it counted."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(RATE_LIMITED_PATHS):
            return self.get_response(request)
        quotas = {q.name: q for q in configured_quotas()}
        charges: list[tuple[Quota, str]] = []
        if "ip" in quotas:
            charges.append((quotas["ip"], client_key(request.META)))
        credential = _credential_partition(request)
        if "key" in quotas and credential is not None:
            charges.insert(0, (quotas["key"], credential))
        if not charges:
            return self.get_response(request)
        spent = rate_counters().spend(charges)
        over = [s for s in spent if s.exceeded]
        response: HttpResponse
        if over:
            wait = max(s.reset for s in over)
            names = " and ".join(f"per {s.quota.name}" for s in over)
            seconds = retry_after_seconds(wait)
            response = domain_error_json(
                RateLimited(
                    f"too many requests ({names}); retry in {seconds} s",
                    details={
                        "retry_after": [str(seconds)],
                        **{
                            s.quota.name: [f"{s.quota.limit} requests per {s.quota.window} s"]
                            for s in over
                        },
                    },
                    retry_after=seconds,
                )
            )
        else:
            response = self.get_response(request)
        for name, value in _headers(spent).items():
            response[name] = value
        return response
