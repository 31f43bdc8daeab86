"""Mailbox logins, shared by SMTP AUTH and IMAP: credential checks, a verification cache,
brute-force limits.

scrypt costs ~50 ms by design, so verification runs in a worker pool and successful
checks are remembered briefly, keyed by (address, sha256(password)). The stored hash is
re-read on every login and compared with the one the cache entry was made against: a
password change (new hash) or a suspension takes effect on the next login, not at expiry.

Failed logins are counted in sliding windows per address and per client IP. Production runs
many submission and IMAP processes on many hosts: with counters in each process's memory
an attacker would get one allowance per process, and SMTP would not see IMAP's failures.
So when Redis is configured (settings.MAILPLANE["REDIS_URL"]) `login_guard()` returns a
`SharedLoginGuard`, whose windows are sorted sets every process reads and writes; without
Redis (embedded mode: one process per protocol) it returns the in-process `LoginGuard`.
If Redis stops answering, logins go on under this process's counters (and the log says
so once per outage): a looser limit for a while is better than refusing every login.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis
import redis.exceptions
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailplane.mailboxes import passwords
from mailplane.mailboxes.models import Mailbox, MailboxStatus

__all__ = [
    "CredentialCache",
    "LoginGuard",
    "LoginLimits",
    "Principal",
    "SharedLoginGuard",
    "login_check",
    "login_guard",
    "mask",
]

log = logging.getLogger("mailplane.logins")

KEY_PREFIX = "mailplane:logins"  # Redis keys: <prefix>:a:<address>, <prefix>:i:<ip>
_MAX_ADDRESS = 254


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a session authenticated as: enough to find the mailbox without another query."""

    mailbox_id: int
    address: str
    organization_id: int


@dataclass(slots=True)
class _Entry:
    principal: Principal
    password_hash: str
    expires: float


class CredentialCache:
    """Successful verifications, remembered for `ttl` seconds (bounded, thread-safe)."""

    def __init__(self, ttl: float = 300.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, bytes], _Entry] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(address: str, password: str) -> tuple[str, bytes]:
        # surrogateescape: IMAP passwords may carry undecodable bytes; never raise here.
        return address, hashlib.sha256(password.encode("utf-8", "surrogateescape")).digest()

    def get(self, key: tuple[str, bytes], stored_hash: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.expires < time.monotonic():
            return None
        if not hmac.compare_digest(entry.password_hash, stored_hash):
            self.invalidate(key[0])  # the password changed since: forget every entry
            return None
        return entry.principal

    def put(self, key: tuple[str, bytes], principal: Principal, stored_hash: str) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # bounded memory; the next logins pay scrypt once
            self._entries[key] = _Entry(principal, stored_hash, time.monotonic() + self.ttl)

    def invalidate(self, address: str) -> None:
        with self._lock:
            for k in [k for k in self._entries if k[0] == address]:
                del self._entries[k]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class LoginLimits(Protocol):
    """What SMTP AUTH and IMAP ask before and tell after a password check.

    Synchronous: the servers call it on their event loop, so an implementation must answer
    in well under a millisecond, or give up quickly (see `SharedLoginGuard`).
    """

    def blocked(self, *, address: str, ip: str) -> bool:
        """True if `address` or `ip` has used up its failures: refuse without a check."""
        ...

    def failed(self, *, address: str, ip: str) -> None:
        """Count one failed login against both the address and the client IP."""
        ...

    def reset(self) -> None:
        """Forget every failure (tests, operators)."""
        ...


class LoginGuard:
    """Sliding-window failure counters in this process; a key over its limit is refused
    without a check.

    A login is refused while the address has `per_address` failures, or the client IP
    `per_ip` failures, within the last `window` seconds. `clock` is injectable for tests.
    """

    def __init__(
        self,
        *,
        per_address: int = 5,
        per_ip: int = 20,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = per_address
        self.per_ip = per_ip
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(address: str, ip: str) -> tuple[str, str]:
        address = address.strip().lower()
        if len(address) > _MAX_ADDRESS:
            # No mailbox has such an address (RFC 5321 §4.5.3.1.3: a path is at most 256
            # octets): key by digest, so a hostile login name cannot make keys of any size.
            digest = hashlib.sha256(address.encode("utf-8", "surrogateescape")).hexdigest()
            address = f"sha256:{digest}"
        return f"a:{address}", f"i:{ip}"

    def _recent(self, key: str, now: float) -> int:
        q = self._failures.get(key)
        if not q:
            return 0
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
            return 0
        return len(q)

    def blocked(self, *, address: str, ip: str) -> bool:
        now = self.clock()
        by_address, by_ip = self._keys(address, ip)
        with self._lock:
            return (
                self._recent(by_address, now) >= self.per_address
                or self._recent(by_ip, now) >= self.per_ip
            )

    def failed(self, *, address: str, ip: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(address, ip):
                self._failures.setdefault(key, deque()).append(now)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()


# Both scripts read the Redis server's clock (TIME, in ms), so processes on hosts with
# skewed clocks agree on what is inside the window. A failure is inside the window while
# it is less than `window` old, as in `LoginGuard` (exactly `window` old: expired).

# KEYS: address key, IP key. ARGV: window (ms), per-address limit, per-IP limit. Read-only.
_BLOCKED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = '(' .. (now - tonumber(ARGV[1]))
if redis.call('ZCOUNT', KEYS[1], since, '+inf') >= tonumber(ARGV[2]) then return 1 end
if redis.call('ZCOUNT', KEYS[2], since, '+inf') >= tonumber(ARGV[3]) then return 1 end
return 0
"""

# KEYS: address key, IP key. ARGV: window (ms), a member unique to this failure. Old
# entries are dropped here, and a key outlives its newest failure by one window only.
_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[1]))
  redis.call('ZADD', KEYS[i], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 1
"""


class SharedLoginGuard:
    """`LoginGuard`'s limits, counted in Redis for every process that uses the same server.

    Each key (`<prefix>:a:<address>`, `<prefix>:i:<ip>`) is a sorted set of failures scored
    by when they happened; every call is one script, one round trip (~0.1 ms on loopback).
    Passwords never reach Redis: a failure is a random member and a time.

    The calls block the event loop, so the socket timeouts are short, and after a Redis
    error the guard counts in this process (`fallback`) for `retry_after` seconds before
    it asks Redis again: a hung server costs one timeout per interval, not one per login.
    Failures counted locally during an outage are not copied to Redis when it returns.
    """

    def __init__(
        self,
        url: str,
        *,
        per_address: int = 5,
        per_ip: int = 20,
        window: float = 300.0,
        prefix: str = KEY_PREFIX,
        timeout: float = 0.5,
        retry_after: float = 5.0,
    ) -> None:
        self.per_address = per_address
        self.per_ip = per_ip
        self.window = window
        self.prefix = prefix
        self.retry_after = retry_after
        self.fallback = LoginGuard(per_address=per_address, per_ip=per_ip, window=window)
        # One retry, on a dropped connection only (a restarted Redis): a fresh connection
        # answers at once. Timeouts are not retried: that would double the stall.
        retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry
        )
        self._blocked = self._client.register_script(_BLOCKED)
        self._failed = self._client.register_script(_FAILED)
        self._window_ms = max(1, int(window * 1000))
        self._down_until: float | None = None  # set while Redis is failing us
        self._lock = threading.Lock()

    def _keys(self, address: str, ip: str) -> list[str]:
        return [f"{self.prefix}:{key}" for key in LoginGuard._keys(address, ip)]

    def _redis_usable(self) -> bool:
        down_until = self._down_until
        return down_until is None or time.monotonic() >= down_until

    def _redis_failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._down_until is None
            self._down_until = time.monotonic() + self.retry_after
        if first:
            log.warning(
                "login limits: Redis unavailable (%s); counting failed logins in this process "
                "until it answers",
                exc,
            )

    def _redis_answered(self) -> None:
        if self._down_until is None:  # the usual case: no lock, nothing to say
            return
        with self._lock:
            was_down, self._down_until = self._down_until is not None, None
        if was_down:
            log.info("login limits: Redis answers again; failed logins are shared again")

    def blocked(self, *, address: str, ip: str) -> bool:
        if self._redis_usable():
            try:
                answer = self._blocked(
                    keys=self._keys(address, ip),
                    args=[self._window_ms, self.per_address, self.per_ip],
                )
            except redis.exceptions.RedisError as exc:
                self._redis_failed(exc)
            else:
                self._redis_answered()
                return bool(answer)
        return self.fallback.blocked(address=address, ip=ip)

    def failed(self, *, address: str, ip: str) -> None:
        if self._redis_usable():
            try:
                self._failed(
                    keys=self._keys(address, ip), args=[self._window_ms, secrets.token_hex(8)]
                )
            except redis.exceptions.RedisError as exc:
                self._redis_failed(exc)
            else:
                self._redis_answered()
                return
        self.fallback.failed(address=address, ip=ip)

    def reset(self) -> None:
        """Delete every key under `prefix` (all processes' counters) and the local ones.

        Unlike logins, this raises if Redis is down: an operator should know it did nothing.
        """
        self.fallback.reset()
        keys = list(self._client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            self._client.delete(*keys)

    def close(self) -> None:
        self._client.close()


def login_guard(
    *, per_address: int = 5, per_ip: int = 20, window: float = 300.0, prefix: str = KEY_PREFIX
) -> LoginLimits:
    """The guard SMTP AUTH and IMAP share: in Redis when configured, else this process's."""
    url = str(settings.MAILPLANE.get("REDIS_URL") or "")
    if url:
        return SharedLoginGuard(
            url,
            per_address=per_address,
            per_ip=per_ip,
            window=window,
            prefix=prefix,
        )
    return LoginGuard(per_address=per_address, per_ip=per_ip, window=window)


def mask(secret: str | bytes) -> str:
    """What logs may show of a secret: its length only."""
    return f"<{len(secret)} chars>"


def login_check(*, address: str, password: str, cache: CredentialCache) -> Principal | None:
    """Blocking: the principal if `password` opens the active mailbox `address`."""
    address = address.strip().lower()
    row = (
        Mailbox.objects.filter(address=address)
        .values("id", "organization_id", "password_hash", "status")
        .first()
    )
    if row is None or row["status"] != MailboxStatus.ACTIVE:
        # Spend the same time as a real check so that timing does not reveal addresses.
        passwords.password_verify(password, _DUMMY_HASH)
        return None
    key = CredentialCache.key(address, password)
    cached = cache.get(key, row["password_hash"])
    if cached is not None:
        return cached
    if not passwords.password_verify(password, row["password_hash"]):
        return None
    principal = Principal(row["id"], address, row["organization_id"])
    cache.put(key, principal, row["password_hash"])
    return principal


_DUMMY_HASH = passwords.password_hash("not-a-real-password-Aa1!")
