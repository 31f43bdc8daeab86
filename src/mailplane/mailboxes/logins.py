"""Mailbox logins, shared by SMTP AUTH and IMAP: credential checks, a verification cache,
brute-force limits.

scrypt costs ~50 ms by design, so verification runs in a worker pool and successful
checks are remembered briefly, keyed by (address, sha256(password)). The stored hash is
re-read on every login and compared with the one the cache entry was made against: a
password change (new hash) or a suspension takes effect on the next login, not at expiry.

Failed logins are counted in sliding windows per address and per client IP. The counters
live in process memory: with several processes behind a load balancer each keeps its own,
so production wants a shared store (Redis) for exact limits.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mailplane.mailboxes import passwords
from mailplane.mailboxes.models import Mailbox, MailboxStatus

__all__ = ["CredentialCache", "LoginGuard", "Principal", "login_check", "mask"]


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


class LoginGuard:
    """Sliding-window failure counters; a key over its limit is refused without a check.

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
        return f"a:{address.strip().lower()}", f"i:{ip}"

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
