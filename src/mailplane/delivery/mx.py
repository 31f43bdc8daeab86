"""Where mail for a domain goes: RFC 5321 §5.1 MX resolution through `mailplane.dns`.

The resolver is the caller's (`mailplane.dns.AsyncResolver`): the delivery provider keeps
one from `caching_async_resolver_from_settings()`, so settings.MAILPLANE["DNS_RESOLVER"]
chooses who answers (tests point it at their local server) and each answer is reused for
its TTL across the chunks of a batch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass

from mailplane.delivery.results import SendResult
from mailplane.dns import (
    AsyncResolver,
    Outcome,
    a_lookup_async,
    aaaa_lookup_async,
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
    lookup = await mx_lookup_async(domain, resolver=resolver)
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
    # RFC 5321 §5.1: lowest preference first; equal preferences in random order.
    shuffled = random.sample(records, len(records))
    shuffled.sort(key=lambda r: r.preference)
    return [MxHost(r.preference, r.host) for r in shuffled if not r.is_null]


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
