"""Mailbox credential checks for IMAP logins.

scrypt costs ~50 ms of CPU per attempt, so the check runs in a worker thread and successful
verifications are remembered briefly. The cache is keyed by (address, sha256(password)) and
each entry remembers the stored hash it was verified against: every login still reads the
mailbox row (an indexed lookup), so a password change or a suspension takes effect on the
next login, never after the cache expires.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from django.db import close_old_connections

from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.mailboxes.passwords import password_hash, password_verify

CACHE_TTL = 300.0
CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class MailboxLogin:
    """Who logged in: enough to find the mailbox's storage without another query."""

    mailbox_id: int
    organization_id: int
    address: str


@dataclass(frozen=True, slots=True)
class _Verified:
    stored_hash: str
    expires: float
    login: MailboxLogin


_cache: dict[tuple[str, bytes], _Verified] = {}
_cache_lock = threading.Lock()
# Unknown addresses still pay for one scrypt so that timing does not reveal which exist.
_DUMMY_HASH = password_hash("not-a-real-password")


def mailbox_authenticate(*, address: str, password: str) -> MailboxLogin | None:
    """Blocking: the active mailbox whose full address and password match, else None."""
    address = address.strip().lower()
    close_old_connections()
    row = (
        Mailbox.objects.filter(address=address, status=MailboxStatus.ACTIVE)
        .values_list("id", "organization_id", "address", "password_hash")
        .first()
    )
    if row is None:
        password_verify(password, _DUMMY_HASH)
        return None
    mailbox_id, organization_id, canonical, stored_hash = row
    key = (canonical, hashlib.sha256(password.encode("utf-8", "surrogateescape")).digest())
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit.stored_hash == stored_hash and hit.expires > now:
        return hit.login
    if not password_verify(password, stored_hash):
        return None
    login = MailboxLogin(mailbox_id=mailbox_id, organization_id=organization_id, address=canonical)
    with _cache_lock:
        if len(_cache) >= CACHE_MAX:
            # Oldest first: dicts keep insertion order.
            for stale in list(_cache)[: CACHE_MAX // 10]:
                del _cache[stale]
        _cache[key] = _Verified(stored_hash=stored_hash, expires=now + CACHE_TTL, login=login)
    return login


def cache_clear() -> None:
    """Forget every remembered verification (tests, benchmarks)."""
    with _cache_lock:
        _cache.clear()
