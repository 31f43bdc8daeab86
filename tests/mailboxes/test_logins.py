"""The shared login classes (SMTP AUTH and IMAP): LoginGuard and CredentialCache."""

from __future__ import annotations

import asyncio

from mailplane.mailboxes.logins import (
    CredentialCache,
    LoginAttempt,
    LoginGate,
    LoginGuard,
    Principal,
    client_network,
    login_keys,
    penalty_delay,
)
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


def _fail(guard: LoginGuard, address: str, ip: str) -> LoginAttempt:
    """One attempt that turns out wrong."""
    attempt = guard.attempt(address=address, ip=ip)
    assert not attempt.refused
    guard.failed(attempt)
    return attempt


def test_failures_refuse_the_failing_client_not_the_mailbox():
    """Issue 8, defect 6: five wrong passwords from one client used to lock the owner out."""
    guard = LoginGuard(per_pair=2, per_ip=100, window=60, clock=Clock())
    _fail(guard, "Alice@X.test", "10.0.0.1")
    _fail(guard, "alice@x.test", "10.0.0.1")
    assert guard.attempt(address="ALICE@x.test", ip="10.0.0.1").refused  # any case
    # The owner, from elsewhere, is neither refused nor slowed.
    owner = guard.attempt(address="alice@x.test", ip="10.0.0.3")
    assert (owner.refused, owner.delay) == (False, 0.0)
    # The attacker may still try other mailboxes (up to the per-IP limit).
    assert not guard.attempt(address="bob@x.test", ip="10.0.0.1").refused


def test_delay_doubles_per_failure_up_to_the_cap():
    guard = LoginGuard(per_pair=8, per_ip=100, window=60, delay_base=2, delay_cap=15, clock=Clock())
    delays = [_fail(guard, "a@x.test", "10.0.0.1").delay for _ in range(8)]
    assert delays == [0, 2, 4, 8, 15, 15, 15, 15]  # Dovecot's auth penalty: 2 s, doubling, 15 s
    assert guard.attempt(address="a@x.test", ip="10.0.0.1").refused
    assert penalty_delay(0, base=2, cap=15) == 0 and penalty_delay(100, base=2, cap=15) == 15


def test_per_ip_limit_and_its_slower_delay_ladder():
    guard = LoginGuard(per_pair=5, per_ip=20, window=60, delay_base=1, delay_cap=15, clock=Clock())
    delays = [_fail(guard, f"user{n}@x.test", "10.0.0.1").delay for n in range(20)]
    # One step per 4 failures (20 / 5): a NAT address's occasional typos cost little.
    assert delays[:4] == [0, 0, 0, 0] and delays[4] == 1 and delays[8] == 2 and delays[19] == 8
    assert guard.attempt(address="fresh@x.test", ip="10.0.0.1").refused
    assert guard.attempt(address="fresh@x.test", ip="10.0.0.2") == LoginAttempt(
        False, 0.0, *login_keys("fresh@x.test", "10.0.0.2")
    )


def test_success_forgets_the_clients_failures_on_that_address_only():
    guard = LoginGuard(per_pair=3, per_ip=100, window=60, clock=Clock())
    _fail(guard, "a@x.test", "ip")
    _fail(guard, "b@x.test", "ip")
    typo_then_right = guard.attempt(address="a@x.test", ip="ip")
    assert typo_then_right.delay > 0
    guard.succeeded(typo_then_right)
    # Its typos on a@ are forgiven, in the IP's count too; b's failure still counts.
    assert guard.failures(address="a@x.test", ip="ip") == (0, 1)
    assert guard.failures(address="b@x.test", ip="ip") == (1, 1)


def test_gate_takes_turns_per_pair_and_bounds_each_clients_checks():
    gate = LoginGate(per_client=2)
    running: dict[str, int] = {"turn": 0, "slot": 0, "others": 0}
    peaks: dict[str, int] = {"turn": 0, "slot": 0, "others": 0}

    async def enter(kind: str) -> None:
        running[kind] += 1
        peaks[kind] = max(peaks[kind], running[kind])
        await asyncio.sleep(0.01)
        running[kind] -= 1

    async def login(address: str, ip: str = "10.0.0.1") -> None:
        async with gate.turn(address=address, ip=ip):
            if address == "a@x.test":
                await enter("turn")
            async with gate.slot(ip=ip):
                if address != "a@x.test":
                    await enter("slot" if ip == "10.0.0.1" else "others")

    async def main() -> None:
        await asyncio.gather(*(login("a@x.test") for _ in range(5)))
        await asyncio.gather(*(login(f"u{n}@x.test") for n in range(6)))
        # Other clients are not held up: their slots are their own.
        await asyncio.gather(*(login("u@x.test", f"10.0.1.{n}") for n in range(6)))

    asyncio.run(main())
    assert peaks == {"turn": 1, "slot": 2, "others": 6}
    assert not gate._pairs and not gate._clients  # nothing kept once nobody waits


def test_ipv6_clients_are_counted_per_64():
    guard = LoginGuard(per_pair=2, per_ip=100, window=60, clock=Clock())
    _fail(guard, "a@x.test", "2001:db8:1:2::1")
    _fail(guard, "a@x.test", "2001:db8:1:2:ffff::9")  # the same /64
    assert guard.attempt(address="a@x.test", ip="2001:db8:1:2::77").refused
    assert not guard.attempt(address="a@x.test", ip="2001:db8:1:3::1").refused
    assert client_network("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_network("unknown") == "unknown"


def test_window_slides_and_reset_forgets():
    clock = Clock()
    guard = LoginGuard(per_pair=2, per_ip=100, window=60, clock=clock)
    _fail(guard, "a@x.test", "ip")
    clock.now += 59
    _fail(guard, "a@x.test", "ip")
    assert guard.attempt(address="a@x.test", ip="ip").refused
    clock.now += 1  # the first failure is exactly `window` old: expired
    _fail(guard, "a@x.test", "ip")
    assert guard.attempt(address="a@x.test", ip="ip").refused
    guard.reset()
    assert not guard.attempt(address="a@x.test", ip="ip").refused


def test_memory_is_bounded_however_many_clients():
    guard = LoginGuard(per_pair=2, per_ip=100, window=60, max_keys=100, clock=Clock())
    for n in range(1000):
        _fail(guard, f"u{n}@x.test", f"10.0.{n // 250}.{n % 250}")
    assert len(guard._failures) <= 102


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
