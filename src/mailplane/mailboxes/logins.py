"""Mailbox logins, shared by SMTP AUTH and IMAP: credential checks, a verification cache,
brute-force limits.

scrypt costs ~50 ms by design, so verification runs in a worker pool and successful
checks are remembered briefly, keyed by (address, sha256(password)). The stored hash is
re-read on every login and compared with the one the cache entry was made against: a
password change (new hash) or a suspension takes effect on the next login, not at expiry.

Failed logins throttle the client that fails, never the mailbox (issue 8, defect 6: five
wrong passwords from anywhere used to lock the owner out). Failures are counted in sliding
windows per (address, client IP) and per client IP, as Dovecot's auth penalty does per IP:
each attempt from a failing client first waits a delay that doubles with its failures (up
to a cap), and past a limit that client is refused without a check. A client with no
failures gets straight through, even while the same address is being guessed elsewhere; a
busy NAT address is only refused for everyone after the (larger) per-IP limit. The price:
a botnet of N addresses gets N x `per_pair` guesses per window at one mailbox, which is
why passwords are long and scrypt-hashed (mailboxes/passwords.py).

Production runs many submission and IMAP processes on many hosts: with counters in each
process's memory an attacker would get one allowance per process, and SMTP would not see
IMAP's failures. So when Redis is configured (settings.MAILPLANE["REDIS_URL"])
`login_guard()` returns a `SharedLoginGuard`, whose windows are sorted sets every process
reads and writes; without Redis (embedded mode: one process per protocol) it returns the
in-process `LoginGuard`. If Redis stops answering, logins go on under this process's
counters (and the log says so once per outage): a looser limit for a while is better than
refusing every login.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from mailplane.core.shared_redis import FallibleRedis
from mailplane.mailboxes import passwords
from mailplane.mailboxes.models import Mailbox, MailboxStatus

__all__ = [
    "CredentialCache",
    "LoginAttempt",
    "LoginGate",
    "LoginGuard",
    "LoginLimits",
    "Principal",
    "SharedLoginGuard",
    "client_network",
    "login_check",
    "login_guard",
    "mask",
]

log = logging.getLogger("mailplane.logins")

KEY_PREFIX = "mailplane:logins"  # Redis keys: <prefix>:p:<ip>|<address>, <prefix>:i:<ip>
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


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """What the limits say about one login attempt, asked before the password is checked.

    `refused`: the client used up its failures: answer "try again later" without a check.
    Otherwise wait `delay` seconds (0 for a client that has not been failing), check, and
    tell the limits `failed` or `succeeded`. Run the whole sequence in a `LoginGate.turn`
    (and the check in a `LoginGate.slot`), so that parallel guesses are counted one by one.
    """

    refused: bool
    delay: float
    pair_key: str = ""
    ip_key: str = ""
    shared: bool = False  # decided by Redis (else by this process's fallback counters)


class LoginLimits(Protocol):
    """What SMTP AUTH and IMAP ask before and tell after a password check.

    Synchronous: the servers call it on their event loop, so an implementation must answer
    in well under a millisecond, or give up quickly (see `SharedLoginGuard`). The delay is
    the caller's to wait, without blocking its loop (`asyncio.sleep`).
    """

    def attempt(self, *, address: str, ip: str) -> LoginAttempt:
        """Refuse, or let the check go on after a delay."""
        ...

    def failed(self, attempt: LoginAttempt) -> None:
        """Count one failure against the (address, client) pair and the client."""
        ...

    def succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: forgive this client's failures on this address (its
        earlier typos), in the client's own count too."""
        ...

    def reset(self) -> None:
        """Forget every failure (tests, operators)."""
        ...


class LoginGate:
    """In this process: one login at a time per (address, client) (`turn`), and at most
    `per_client` password checks at once per client (`slot`).

    The counters are read before a check and written after it, so parallel guesses would
    all pass a limit that none of them has reached yet. In turn, each waits for the one
    before it and sees its failure: a burst of a hundred gets `per_pair` checks, with the
    delays between them; a burst spread over many addresses gets `per_client` checks at a
    time until the per-IP limit refuses the rest. The penalty delay is waited in turn but
    outside the slot, so a NAT neighbour's login is not held up by an attacker's delays.
    A client with the right password waits only for its own parallel logins, which hit the
    credential cache after the first. Across P processes, P times as many at most.
    """

    def __init__(self, *, per_client: int = 8) -> None:
        self.per_client = per_client
        self._pairs: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._clients: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, *, address: str, ip: str) -> AsyncIterator[None]:
        key, _ = login_keys(address, ip)
        lock, users = self._pairs.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1  # entries live while someone holds or awaits them
            if not users[0]:
                del self._pairs[key]

    @contextlib.asynccontextmanager
    async def slot(self, *, ip: str) -> AsyncIterator[None]:
        _, key = login_keys("", ip)
        semaphore, users = self._clients.setdefault(key, (asyncio.Semaphore(self.per_client), [0]))
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._clients[key]


def client_network(ip: str) -> str:
    """The unit an IP's failures are counted in: the address, or its /64 for IPv6.

    One IPv6 subscriber usually holds a whole /64 (RFC 6177 §2 and Dovecot's auth penalty
    mask the same way): counting per address would give an attacker 2^64 allowances.
    IPv4-mapped IPv6 addresses count as the IPv4 address.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]  # "unknown", a Unix socket path: keyed as given, bounded
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


def login_keys(address: str, ip: str) -> tuple[str, str]:
    """(pair key, IP key): failures of one client on one address, and of the client."""
    address = address.strip().lower()
    if len(address) > _MAX_ADDRESS:
        # No mailbox has such an address (RFC 5321 §4.5.3.1.3: a path is at most 256
        # octets): key by digest, so a hostile login name cannot make keys of any size.
        digest = hashlib.sha256(address.encode("utf-8", "surrogateescape")).hexdigest()
        address = f"sha256:{digest}"
    network = client_network(ip)
    # An IP or network never contains "|": the address after it cannot shift the boundary.
    return f"p:{network}|{address}", f"i:{network}"


def penalty_delay(failures: int, *, base: float, cap: float) -> float:
    """Dovecot's auth penalty: none without failures, then `base`·2^(n-1), at most `cap`."""
    if failures <= 0 or base <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 32)))


class _Policy:
    """The numbers both guards share, and the one decision made from two counts."""

    def __init__(
        self, *, per_pair: int, per_ip: int, window: float, delay_base: float, delay_cap: float
    ) -> None:
        self.per_pair = per_pair
        self.per_ip = per_ip
        self.window = window
        self.delay_base = delay_base
        self.delay_cap = delay_cap

    def decide(self, pair_failures: int, ip_failures: int) -> tuple[bool, float]:
        """(refused, delay). The IP's count climbs the same delay ladder, scaled to its
        larger limit: a NAT address whose users mistype now and then is not slowed as if
        it were guessing one mailbox's password."""
        if pair_failures >= self.per_pair or ip_failures >= self.per_ip:
            return True, 0.0
        ip_steps = ip_failures * self.per_pair // max(1, self.per_ip)
        steps = max(pair_failures, ip_steps)
        return False, penalty_delay(steps, base=self.delay_base, cap=self.delay_cap)


class LoginGuard(_Policy):
    """Sliding-window failure counters in this process (embedded mode).

    A client (an IP, or an IPv6 /64) is refused for an address after `per_pair` failures on
    it within `window` seconds, and for every address after `per_ip` failures; before that
    each attempt waits the penalty delay its failures have earned. A client that has not
    failed is never slowed or refused, whoever else is guessing that address's password.
    `clock` is injectable for tests.
    """

    def __init__(
        self,
        *,
        per_pair: int = 5,
        per_ip: int = 20,
        window: float = 300.0,
        delay_base: float = 2.0,
        delay_cap: float = 15.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            per_pair=per_pair,
            per_ip=per_ip,
            window=window,
            delay_base=delay_base,
            delay_cap=delay_cap,
        )
        self.clock = clock
        self.max_keys = max_keys
        # key -> (time, id) of each failure; refused attempts are not checked, so not
        # counted, and no deque grows much past its limit.
        self._failures: dict[str, deque[tuple[float, str]]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> int:
        q = self._failures.get(key)
        if not q:
            return 0
        while q and q[0][0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
            return 0
        return len(q)

    def failures(self, *, address: str, ip: str) -> tuple[int, int]:
        """(this client's failures on `address`, the client's failures): for tests."""
        pair_key, ip_key = login_keys(address, ip)
        now = self.clock()
        with self._lock:
            return self._recent(pair_key, now), self._recent(ip_key, now)

    def attempt(self, *, address: str, ip: str) -> LoginAttempt:
        pair_key, ip_key = login_keys(address, ip)
        now = self.clock()
        with self._lock:
            refused, delay = self.decide(self._recent(pair_key, now), self._recent(ip_key, now))
        return LoginAttempt(refused, delay, pair_key, ip_key)

    def failed(self, attempt: LoginAttempt) -> None:
        now = self.clock()
        failure = (now, secrets.token_hex(8))
        with self._lock:
            if len(self._failures) >= self.max_keys:
                self._prune(now)
            for key in (attempt.pair_key, attempt.ip_key):
                self._failures.setdefault(key, deque()).append(failure)

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._failures.items() if not q or q[-1][0] <= now - self.window]:
            del self._failures[key]
        if len(self._failures) >= self.max_keys:
            self._failures.clear()  # a flood of client addresses: start over, stay bounded

    def succeeded(self, attempt: LoginAttempt) -> None:
        with self._lock:
            forgiven = {failure for _, failure in self._failures.pop(attempt.pair_key, ())}
            q = self._failures.get(attempt.ip_key)
            if q is None or not forgiven:
                return
            kept = deque(item for item in q if item[1] not in forgiven)
            if kept:
                self._failures[attempt.ip_key] = kept
            else:
                del self._failures[attempt.ip_key]

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()


# The scripts read the Redis server's clock (TIME, in ms), so processes on hosts with
# skewed clocks agree on what is inside the window. A failure is inside the window while
# it is less than `window` old, as in `LoginGuard` (exactly `window` old: expired).

# KEYS: pair key, IP key. ARGV: window (ms). Returns {pair failures, IP failures}; expired
# entries are dropped on the way.
_ATTEMPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counts = {}
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[1]))
  counts[i] = redis.call('ZCARD', KEYS[i])
end
return counts
"""

# KEYS: pair key, IP key. ARGV: window (ms), a member unique to this failure. A key
# outlives its newest failure by one window only.
_FAILED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 1
"""

# KEYS: pair key, IP key. The pair's failures are forgiven, in the IP's count too.
_SUCCEEDED = """
local typos = redis.call('ZRANGE', KEYS[1], 0, -1)
if #typos > 0 then
  redis.call('ZREM', KEYS[2], unpack(typos))
  redis.call('DEL', KEYS[1])
end
return 1
"""


class SharedLoginGuard(_Policy):
    """`LoginGuard`'s limits, counted in Redis for every process that uses the same server.

    Each key (`<prefix>:p:<client>|<address>`, `<prefix>:i:<client>`) is a sorted set of
    failures scored by when they happened; every call is one script, one round trip
    (~0.1 ms on loopback). Passwords never reach Redis: a failure is a random member and a
    time.

    The calls block the event loop, so the socket timeouts are short, and after a Redis
    error the guard counts in this process (`fallback`) for `retry_after` seconds before
    it asks Redis again: a hung server costs one timeout per interval, not one per login.
    Failures counted locally during an outage are not copied to Redis when it returns.
    """

    def __init__(
        self,
        url: str,
        *,
        per_pair: int = 5,
        per_ip: int = 20,
        window: float = 300.0,
        delay_base: float = 2.0,
        delay_cap: float = 15.0,
        prefix: str = KEY_PREFIX,
        timeout: float = 0.5,
        retry_after: float = 5.0,
    ) -> None:
        super().__init__(
            per_pair=per_pair,
            per_ip=per_ip,
            window=window,
            delay_base=delay_base,
            delay_cap=delay_cap,
        )
        self.prefix = prefix
        self.retry_after = retry_after
        self.fallback = LoginGuard(
            per_pair=per_pair,
            per_ip=per_ip,
            window=window,
            delay_base=delay_base,
            delay_cap=delay_cap,
        )
        self._shared = FallibleRedis(
            url,
            log=log,
            what="login limits",
            meanwhile="counting failed logins in this process until it answers",
            timeout=timeout,
            retry_after=retry_after,
        )
        self._client = self._shared.client
        self._attempt = self._shared.script(_ATTEMPT)
        self._failed = self._shared.script(_FAILED)
        self._succeeded = self._shared.script(_SUCCEEDED)
        self._window_ms = max(1, int(window * 1000))

    def _call(self, script: Any, attempt: LoginAttempt, args: list[Any]) -> Any:
        """The script's answer, or None once Redis has failed us (then logged)."""
        keys = [f"{self.prefix}:{attempt.pair_key}", f"{self.prefix}:{attempt.ip_key}"]
        _, answer = self._shared.call(lambda: script(keys=keys, args=args))
        return answer

    def attempt(self, *, address: str, ip: str) -> LoginAttempt:
        local = self.fallback.attempt(address=address, ip=ip)
        counts = self._call(self._attempt, local, [self._window_ms])
        if counts is None:
            return local
        refused, delay = self.decide(int(counts[0]), int(counts[1]))
        return LoginAttempt(refused, delay, local.pair_key, local.ip_key, shared=True)

    def failed(self, attempt: LoginAttempt) -> None:
        if (
            not attempt.shared
            or self._call(self._failed, attempt, [self._window_ms, secrets.token_hex(8)]) is None
        ):
            self.fallback.failed(attempt)

    def succeeded(self, attempt: LoginAttempt) -> None:
        if attempt.shared:
            self._call(self._succeeded, attempt, [])
        self.fallback.succeeded(attempt)

    def reset(self) -> None:
        """Delete every key under `prefix` (all processes' counters) and the local ones.

        Unlike logins, this raises if Redis is down: an operator should know it did nothing.
        """
        self.fallback.reset()
        self._shared.keys_delete(self.prefix)

    def close(self) -> None:
        self._shared.close()


def login_guard(
    *,
    per_pair: int = 5,
    per_ip: int = 20,
    window: float = 300.0,
    delay_base: float = 2.0,
    delay_cap: float = 15.0,
    prefix: str = KEY_PREFIX,
) -> LoginLimits:
    """The guard SMTP AUTH and IMAP share: in Redis when configured, else this process's."""
    limits: dict[str, Any] = {
        "per_pair": per_pair,
        "per_ip": per_ip,
        "window": window,
        "delay_base": delay_base,
        "delay_cap": delay_cap,
    }
    url = str(settings.MAILPLANE.get("REDIS_URL") or "")
    if url:
        return SharedLoginGuard(url, prefix=prefix, **limits)
    return LoginGuard(**limits)


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
