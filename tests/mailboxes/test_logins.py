"""The shared login classes (SMTP AUTH and IMAP): LoginGuard and CredentialCache."""

from __future__ import annotations

from mailplane.mailboxes.logins import CredentialCache, LoginGuard, Principal
from mailplane.smtp import logins as smtp_logins


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_smtp_module_re_exports_the_shared_classes():
    assert smtp_logins.LoginGuard is LoginGuard
    assert smtp_logins.CredentialCache is CredentialCache
    assert smtp_logins.Principal is Principal


def test_guard_limits_per_address_case_insensitively():
    guard = LoginGuard(per_address=2, per_ip=100, window=60, clock=Clock())
    guard.failed(address="Alice@X.test", ip="10.0.0.1")
    assert not guard.blocked(address="alice@x.test", ip="10.0.0.1")
    guard.failed(address="alice@x.test", ip="10.0.0.2")
    assert guard.blocked(address="ALICE@x.test", ip="10.0.0.3")  # any IP
    assert not guard.blocked(address="bob@x.test", ip="10.0.0.1")


def test_guard_limits_per_ip():
    guard = LoginGuard(per_address=100, per_ip=3, window=60, clock=Clock())
    for n in range(3):
        guard.failed(address=f"user{n}@x.test", ip="10.0.0.1")
    assert guard.blocked(address="fresh@x.test", ip="10.0.0.1")
    assert not guard.blocked(address="fresh@x.test", ip="10.0.0.2")


def test_guard_window_slides_and_reset_forgets():
    clock = Clock()
    guard = LoginGuard(per_address=2, per_ip=100, window=60, clock=clock)
    guard.failed(address="a@x.test", ip="ip")
    clock.now += 59
    guard.failed(address="a@x.test", ip="ip")
    assert guard.blocked(address="a@x.test", ip="ip")
    clock.now += 1  # the first failure is exactly `window` old: expired
    assert not guard.blocked(address="a@x.test", ip="ip")
    guard.failed(address="a@x.test", ip="ip")
    assert guard.blocked(address="a@x.test", ip="ip")
    guard.reset()
    assert not guard.blocked(address="a@x.test", ip="ip")


def test_cache_checks_stored_hash_and_tolerates_undecodable_passwords():
    cache = CredentialCache(ttl=60)
    principal = Principal(1, "a@x.test", 7)
    key = CredentialCache.key("a@x.test", "pass\udcff")  # surrogateescape'd byte: no error
    assert cache.get(key, "hash1") is None
    cache.put(key, principal, "hash1")
    assert cache.get(key, "hash1") is principal
    # A different stored hash (password changed) drops every entry of the address.
    assert cache.get(key, "hash2") is None
    assert cache.get(key, "hash1") is None


def test_cache_is_bounded():
    cache = CredentialCache(ttl=60, max_entries=2)
    for n in range(3):
        cache.put(CredentialCache.key(f"u{n}@x.test", "p"), Principal(n, f"u{n}@x.test", 1), "h")
    assert len(cache._entries) <= 2
    cache.clear()
    assert not cache._entries
