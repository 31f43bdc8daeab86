"""Where mail for a domain goes: RFC 5321 §5.1 MX resolution through `mailplane.dns`.

The resolver is the caller's (`mailplane.dns.AsyncResolver`): the delivery provider keeps
one from `caching_async_resolver_from_settings()`, so settings.MAILPLANE["DNS_RESOLVER"]
chooses who answers (tests point it at their local server) and each answer is reused for
its TTL across the chunks of a batch.

Internationalised domains (RFC 6531 addresses like josé@exämple.test): the DNS is asked
for the A-label form (RFC 5890 §2.3.2.1, xn--exmple-cua.test); the U-label the message was
addressed to stays in replies and events.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from mailplane.delivery.results import SendResult
from mailplane.dns import (
    AsyncResolver,
    Outcome,
    a_lookup_async,
    aaaa_lookup_async,
    domain_ascii,
    mx_lookup_async,
)


class RouteError(Exception):
    """No usable route; carries the SendResult (temporary or permanent) to record."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.reply)
        self.result = result


@dataclass(frozen=True, slots=True)
class MxHost:
    preference: int
    name: str
    implicit: bool = False  # no MX records: the domain itself (RFC 5321 §5.1)


async def mx_hosts(resolver: AsyncResolver, domain: str) -> list[MxHost]:
    """MX hosts in the order to try them, or RouteError."""
    try:
        name = domain_ascii(domain)
    except UnicodeError:
        raise RouteError(
            SendResult.permanent(f"553 5.1.2 {domain} is not a valid domain name (IDNA)")
        ) from None
    lookup = await mx_lookup_async(name, resolver=resolver)
    if lookup.outcome is Outcome.ERROR:
        raise RouteError(
            SendResult.temporary(f"451 4.4.3 DNS lookup for {domain} failed: {lookup.reason}")
        )
    if lookup.outcome is Outcome.MISSING:
        if lookup.nxdomain:
            raise RouteError(
                SendResult.permanent(f"550 5.1.2 domain {domain} does not exist (NXDOMAIN)")
            )
        # NODATA. RFC 5321 §5.1: no MX records → the domain itself is the implicit MX
        # (preference 0), provided it has an address record; host_addresses() checks that.
        return [MxHost(0, lookup.name, implicit=True)]
    records = lookup.records
    # RFC 7505 §3: a single "MX 0 ." is a null MX: the domain accepts no mail.
    if len(records) == 1 and records[0].is_null:
        raise RouteError(SendResult.permanent(f"556 5.1.10 {domain} publishes a null MX"))
    return preference_order([MxHost(r.preference, r.host) for r in records if not r.is_null])


def preference_order(hosts: list[MxHost]) -> list[MxHost]:
    """RFC 5321 §5.1: lowest preference first; equal preferences in random order."""
    shuffled = random.sample(hosts, len(hosts))
    shuffled.sort(key=lambda h: h.preference)
    return shuffled


async def host_addresses(resolver: AsyncResolver, host: str) -> list[str]:
    """IPv4 then IPv6 addresses of an MX host (empty if it has none), or RouteError when
    it has none we know of and a lookup failed (it may have some: try again later)."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    lookups = await asyncio.gather(
        a_lookup_async(host, resolver=resolver), aaaa_lookup_async(host, resolver=resolver)
    )
    addresses = [address for lookup in lookups for address in lookup.records]
    failed = [lookup for lookup in lookups if lookup.outcome is Outcome.ERROR]
    if not addresses and failed:
        raise RouteError(
            SendResult.temporary(f"451 4.4.3 DNS lookup for {host} failed: {failed[0].reason}")
        )
    return addresses


class Routes:
    """MX hosts and host addresses for one provider, each asked of the resolver at most
    once per `memo_seconds`, and only once at a time.

    The resolver's cache already keeps answers for their TTL; this saves asking it: a
    cache hit in dnspython still builds names, a query and an answer (with an exception
    for "no AAAA"), 15% of the delivery worker's CPU in bench/delivery.py, where the
    chunks of a batch ask the same questions within the same second. Chunks that ask
    while the first question is still out wait for its answer instead of sending their
    own: a batch's first pass would otherwise send hundreds of identical queries at
    once. Only answers are kept, never failures, and a memo is far shorter than any TTL.
    """

    def __init__(self, resolver: AsyncResolver, *, memo_seconds: float = 1.0) -> None:
        self.resolver = resolver
        self.memo_seconds = memo_seconds
        self._memo: dict[tuple[str, str], tuple[float, Any]] = {}
        self._asking: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def hosts(self, domain: str) -> list[MxHost]:
        hosts = await self._answer(("MX", domain), lambda: mx_hosts(self.resolver, domain))
        return preference_order(hosts)  # a fresh draw among equals for every caller

    async def addresses(self, host: str) -> list[str]:
        return list(await self._answer(("A", host), lambda: host_addresses(self.resolver, host)))

    async def _answer(
        self, key: tuple[str, str], ask: Callable[[], Coroutine[Any, Any, Any]]
    ) -> Any:
        memo = self._memo.get(key)
        if memo is not None and memo[0] > time.monotonic():
            return memo[1]
        question = self._asking.get(key)
        if question is None:
            question = self._asking[key] = asyncio.ensure_future(ask())
            question.add_done_callback(lambda _: self._asking.pop(key, None))
        answer = await asyncio.shield(question)  # one waiter cancelled: not the others'
        if len(self._memo) >= 10_000:
            self._memo.clear()  # bounded: a flood of distinct domains costs lookups, not memory
        self._memo[key] = (time.monotonic() + self.memo_seconds, answer)
        return answer
