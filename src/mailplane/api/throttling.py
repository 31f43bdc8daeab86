"""Failed API-key authentications per client address: past the limit, 429 + Retry-After.

Issue 8 found 1,000 wrong keys at 171/s all answered 401. Now a client address that sent
API_AUTH_FAILURES_PER_IP wrong (or malformed) keys within API_AUTH_FAILURE_WINDOW seconds
gets 429, with the seconds until its oldest counted failure leaves the window in
`Retry-After`, and its keys are not even looked up meanwhile. Only the failing address is
throttled: a valid key from any other address is served as usual, and requests without an
Api-Key header are not counted (they guess nothing).

The count is kept where every web process sees it: in Redis (sorted sets of failure times,
one script per call, the Redis server's clock) when settings.MAILPLANE["REDIS_URL"] is set,
else in this process (embedded mode). If Redis stops answering, this process's counters
take over until it answers again (logged once), as the mail login limits do.

Hand-written rather than a DRF throttle: DRF's throttles count every request, run after
authentication has already failed, and keep their history as read-modify-write cache
entries, which concurrent processes overwrite.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from django.conf import settings

from mailplane.core.shared_redis import FallibleRedis

log = logging.getLogger("mailplane.api.throttling")

KEY_PREFIX = "mailplane:api-auth"
# Bounded memory in one process however many addresses an attacker sends from.
_MAX_LOCAL_CLIENTS = 100_000


class AuthFailureLimits(Protocol):
    def retry_after(self, *, client: str) -> float | None:
        """Seconds until `client` may try a key again; None when it may now."""
        ...

    def failed(self, *, client: str) -> None:
        """Count one wrong or malformed key from `client`."""
        ...

    def reset(self) -> None:
        """Forget every failure (tests, operators)."""
        ...


class LocalAuthFailures:
    """The newest `limit` failure times of each client, in this process."""

    def __init__(
        self, *, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *, client: str) -> float | None:
        now = self.clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return None
            while times and times[0] <= now - self.window:
                times.popleft()
            if not times:
                del self._failures[client]
                return None
            if len(times) < self.limit:
                return None
            # Blocked until the oldest of the newest `limit` failures leaves the window.
            return times[0] + self.window - now

    def failed(self, *, client: str) -> None:
        now = self.clock()
        with self._lock:
            if client not in self._failures and len(self._failures) >= _MAX_LOCAL_CLIENTS:
                self._prune(now)
            self._failures.setdefault(client, deque(maxlen=self.limit)).append(now)

    def _prune(self, now: float) -> None:
        stale = [c for c, t in self._failures.items() if not t or t[-1] <= now - self.window]
        for client in stale:
            del self._failures[client]
        if len(self._failures) >= _MAX_LOCAL_CLIENTS:
            self._failures.clear()  # a flood of addresses: start over rather than grow

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()


# Both scripts read the Redis server's clock (TIME, ms), so that web processes on hosts
# with skewed clocks agree on the window. KEYS[1]: the client's key.
# ARGV: window (ms), limit. Returns 0 (not blocked) or the ms until the block ends.
_RETRY_AFTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local since = '(' .. (now - window)
local n = redis.call('ZCOUNT', KEYS[1], since, '+inf')
if n < limit then return 0 end
local oldest = redis.call(
  'ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', n - limit, 1)
return math.max(1, tonumber(oldest[2]) + window - now)
"""

# ARGV: window (ms), limit, a member unique to this failure. Keeps the newest `limit`
# failures only, and the key lives one window past the newest.
_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class SharedAuthFailures:
    """`LocalAuthFailures`' limits, counted in Redis for every process that uses it.

    Socket timeouts are short, and after a Redis error this process counts alone
    (`fallback`) for `retry_redis_after` seconds before it asks Redis again.
    """

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        window: float,
        prefix: str = KEY_PREFIX,
        timeout: float = 0.5,
        retry_redis_after: float = 5.0,
    ) -> None:
        self.limit = limit
        self.window = window
        self.prefix = prefix
        self.retry_redis_after = retry_redis_after
        self.fallback = LocalAuthFailures(limit=limit, window=window)
        self._shared = FallibleRedis(
            url, log=log, what="API auth throttle", timeout=timeout, retry_after=retry_redis_after
        )
        self._client = self._shared.client
        self._retry_after = self._shared.script(_RETRY_AFTER)
        self._failed = self._shared.script(_FAILED)
        self._window_ms = max(1, int(window * 1000))

    def _redis(self, call: Callable[[], Any]) -> tuple[bool, Any]:
        return self._shared.call(call)

    def retry_after(self, *, client: str) -> float | None:
        key = f"{self.prefix}:{client}"
        shared, answer = self._redis(
            lambda: self._retry_after(keys=[key], args=[self._window_ms, self.limit])
        )
        if not shared:
            return self.fallback.retry_after(client=client)
        return int(answer) / 1000 if answer else None

    def failed(self, *, client: str) -> None:
        key = f"{self.prefix}:{client}"
        shared, _ = self._redis(
            lambda: self._failed(
                keys=[key], args=[self._window_ms, self.limit, secrets.token_hex(8)]
            )
        )
        if not shared:
            self.fallback.failed(client=client)

    def reset(self) -> None:
        self.fallback.reset()
        self._shared.keys_delete(self.prefix)


@functools.lru_cache(maxsize=4)
def _limits_for(url: str, limit: int, window: float) -> AuthFailureLimits:
    if url:
        return SharedAuthFailures(url, limit=limit, window=window)
    return LocalAuthFailures(limit=limit, window=window)


def auth_failure_limits() -> AuthFailureLimits:
    """This process's throttle for the current settings (one per configuration)."""
    conf = settings.MAILPLANE
    return _limits_for(
        str(conf.get("REDIS_URL") or ""),
        int(conf["API_AUTH_FAILURES_PER_IP"]),
        float(conf["API_AUTH_FAILURE_WINDOW"]),
    )


def client_address(meta: dict[str, Any]) -> str:
    """The peer address, or the client a trusted proxy names ("" when neither parses)."""
    address = str(meta.get("REMOTE_ADDR") or "")
    trusted = set(settings.MAILPLANE["TRUSTED_PROXIES"])
    if address in trusted:
        # Each proxy appends the address it received from: the right-most untrusted
        # entry is the client; the ones left of it are whatever the client claimed.
        hops = [h.strip() for h in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        for hop in reversed(hops):
            if hop and hop not in trusted:
                address = hop
                break
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""


def client_key(meta: dict[str, Any]) -> str:
    """Who is calling, for counting: the client's address (see `client_address`).

    IPv6 clients count per /64, the block one subscriber gets (RFC 6177 §3), so an
    attacker cannot take a fresh address for each try.
    """
    address = client_address(meta)
    if not address:
        return "unknown"
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def retry_after_seconds(wait: float) -> int:
    """What Retry-After says (RFC 9110 §10.2.3: whole seconds), never 0."""
    return max(1, math.ceil(wait))
