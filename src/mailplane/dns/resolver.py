"""The resolver contract and its dnspython implementations (sync and asyncio).

A resolver answers one question, `resolve(name, rdtype)`, with the answer's rdata or one of
two exceptions: `RecordMissing` (the DNS said "no") or `LookupFailed` (the DNS said nothing
useful). Everything else, parsing included, lives in `mailplane.dns.records`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
from django.conf import settings

log = logging.getLogger(__name__)

# 1232 bytes (DNS flag day 2020) avoids IP fragmentation while letting a 2048-bit DKIM
# key come back over UDP instead of a TC=1 retry over TCP (RFC 7766).
EDNS_PAYLOAD = 1232


class DnsError(Exception):
    """Base of the resolver exceptions; `str()` is a short human reason."""


class RecordMissing(DnsError):
    """A definite negative answer: NXDOMAIN or NODATA (RFC 2308 §§2.1-2.2)."""


class NxDomain(RecordMissing):
    """The name does not exist, with no record of any type (RFC 2308 §2.1).

    Mail routing tells it apart from NoData: a domain that does not exist bounces
    (5.1.2), one without MX records may still take mail at its address (RFC 5321 §5.1).
    """


class NoData(RecordMissing):
    """The name exists but has no record of the asked type (RFC 2308 §2.2)."""


class LookupFailed(DnsError):
    """No usable answer (timeout, SERVFAIL, REFUSED, no resolver): the record may exist."""


@runtime_checkable
class Resolver(Protocol):
    def resolve(self, name: str, rdtype: str) -> Sequence[dns.rdata.Rdata]:
        """The rdata of type `rdtype` at `name` (CNAMEs followed); raises DnsError."""
        ...


@runtime_checkable
class AsyncResolver(Protocol):
    async def resolve(self, name: str, rdtype: str) -> Sequence[dns.rdata.Rdata]:
        """As `Resolver.resolve`, without blocking the event loop."""
        ...


def nameservers_parse(spec: str) -> list[tuple[str, int]]:
    """'127.0.0.1:5353', '[::1]:53', '10.0.0.2' or a comma-separated list of them.

    Addresses must be IP literals: a resolver cannot be found by asking a resolver.
    """
    servers: list[tuple[str, int]] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"invalid DNS resolver address {item!r}")
            port = rest[1:] or "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError as exc:
            raise ValueError(
                f"invalid DNS resolver address {item!r}: expected ip:port, e.g. 127.0.0.1:53"
            ) from exc
        if not 0 < number < 65536:
            raise ValueError(f"invalid DNS resolver port in {item!r}")
        servers.append((host, number))
    return servers


def _configure(resolver: dns.resolver.BaseResolver, spec: str, timeout: float) -> None:
    if spec.strip():
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers_parse(spec)
        ]
    # One budget for the whole lookup (the caller decides how long "later" is), tried up
    # to three times within it: one lost UDP datagram must not fail the lookup.
    resolver.timeout = max(timeout / 3, 0.2)
    resolver.lifetime = timeout
    resolver.use_edns(0, 0, EDNS_PAYLOAD)


class TtlCache(dns.resolver.LRUCache):
    """dnspython's bounded LRU answer cache (each answer expires at its lowest TTL), minus
    negative answers without an SOA record.

    RFC 2308 §5: a negative answer carries its TTL in the SOA of the authority section,
    and one without an SOA should not be cached (dnspython would keep it 300 s).
    """

    def put(self, key: dns.resolver.CacheKey, value: dns.resolver.Answer) -> None:
        if value.rrset is None and not any(
            rrset.rdtype == dns.rdatatype.SOA and value.canonical_name.is_subdomain(rrset.name)
            for rrset in value.response.authority
        ):
            return
        super().put(key, value)


def _new_resolver(cls: Any, spec: str, timeout: float, cache_size: int) -> Any:
    try:
        resolver = cls(configure=not spec.strip())
    except dns.resolver.NoResolverConfiguration as exc:
        raise LookupFailed("no DNS resolver configured (set MAILPLANE_DNS_RESOLVER)") from exc
    _configure(resolver, spec, timeout)
    if cache_size > 0:
        resolver.cache = TtlCache(cache_size)
    return resolver


def _absolute(name: str) -> str:
    # Never let a search list turn "acme.test" into "acme.test.corp.example".
    return name.rstrip(".") + "."


def _translate(exc: Exception, name: str, rdtype: str, timeout: float) -> DnsError:
    """Map dnspython's exceptions onto missing/failed, with a short reason."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return NxDomain(f"{name} does not exist (NXDOMAIN)")
    if isinstance(exc, dns.resolver.NoAnswer):
        return NoData(f"{name} has no {rdtype} records")
    if isinstance(exc, dns.exception.Timeout):
        return LookupFailed(f"no answer within {timeout:g}s (timeout)")
    if isinstance(exc, dns.resolver.NoNameservers):
        # Each error is (server, tcp, port, rcode text or exception, response).
        reasons = sorted(
            {
                error[3] if isinstance(error[3], str) else type(error[3]).__name__
                for error in exc.kwargs.get("errors") or []
            }
        )
        return LookupFailed(f"resolver answered {', '.join(reasons) or 'with errors'}")
    if isinstance(exc, dns.resolver.NoResolverConfiguration):
        return LookupFailed("no DNS resolver configured (set MAILPLANE_DNS_RESOLVER)")
    return LookupFailed(f"lookup failed: {exc.__class__.__name__}: {exc}")


_EXPECTED = (dns.exception.DNSException, OSError)


class DnsPythonResolver:
    """`Resolver` over dnspython's stub resolver (UDP with EDNS, TCP on truncation).

    `cache_size` > 0 keeps up to that many answers for their TTL (`TtlCache`); the cache
    lives as long as the resolver, so its owner decides how stale "now" may be.
    """

    def __init__(self, spec: str = "", timeout: float = 3.0, *, cache_size: int = 0) -> None:
        self.spec, self.timeout = spec, timeout
        self._resolver: dns.resolver.Resolver = _new_resolver(
            dns.resolver.Resolver, spec, timeout, cache_size
        )

    def resolve(self, name: str, rdtype: str) -> Sequence[dns.rdata.Rdata]:
        try:
            answer = self._resolver.resolve(_absolute(name), rdtype, search=False)
        except _EXPECTED as exc:
            raise _translate(exc, name, rdtype, self.timeout) from exc
        return list(answer)


class AsyncDnsPythonResolver:
    """`AsyncResolver` over dns.asyncresolver, configured exactly like DnsPythonResolver
    (the same optional `cache_size`)."""

    def __init__(self, spec: str = "", timeout: float = 3.0, *, cache_size: int = 0) -> None:
        self.spec, self.timeout = spec, timeout
        self._resolver: dns.asyncresolver.Resolver = _new_resolver(
            dns.asyncresolver.Resolver, spec, timeout, cache_size
        )

    async def resolve(self, name: str, rdtype: str) -> Sequence[dns.rdata.Rdata]:
        try:
            answer = await self._resolver.resolve(_absolute(name), rdtype, search=False)
        except _EXPECTED as exc:
            raise _translate(exc, name, rdtype, self.timeout) from exc
        return list(answer)


def resolver_settings() -> tuple[str, float]:
    """(resolver spec, timeout) as settings.MAILPLANE has them."""
    conf = settings.MAILPLANE
    return str(conf.get("DNS_RESOLVER") or ""), float(conf.get("DNS_TIMEOUT") or 3.0)


class _Unconfigured:
    """Stands in when the system has no resolver: every lookup fails (and says why)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def resolve(self, name: str, rdtype: str) -> Sequence[dns.rdata.Rdata]:
        raise LookupFailed(self.reason)


class _AsyncUnconfigured(_Unconfigured):
    async def resolve(self, name: str, rdtype: str) -> Sequence[dns.rdata.Rdata]:  # type: ignore[override]
        raise LookupFailed(self.reason)


# Cached per configuration: building a resolver reads /etc/resolv.conf, and settings can
# change under tests (the cache key follows them).
@functools.lru_cache(maxsize=8)
def _cached(spec: str, timeout: float) -> Resolver:
    try:
        return DnsPythonResolver(spec, timeout)
    except LookupFailed as exc:
        return _Unconfigured(str(exc))
    except ValueError as exc:
        log.error("MAILPLANE_DNS_RESOLVER is invalid: %s", exc)
        return _Unconfigured(f"invalid MAILPLANE_DNS_RESOLVER: {exc}")


def _async_resolver(spec: str, timeout: float, cache_size: int) -> AsyncResolver:
    try:
        return AsyncDnsPythonResolver(spec, timeout, cache_size=cache_size)
    except LookupFailed as exc:
        return _AsyncUnconfigured(str(exc))
    except ValueError as exc:
        log.error("MAILPLANE_DNS_RESOLVER is invalid: %s", exc)
        return _AsyncUnconfigured(f"invalid MAILPLANE_DNS_RESOLVER: {exc}")


@functools.lru_cache(maxsize=8)
def _cached_async(spec: str, timeout: float) -> AsyncResolver:
    return _async_resolver(spec, timeout, cache_size=0)


def resolver_describe() -> str:
    """Which resolver the checks and lookups use, for the start-up banner."""
    spec, _ = resolver_settings()
    if spec:
        return f"{spec} (MAILPLANE_DNS_RESOLVER)"
    try:
        servers = dns.resolver.Resolver().nameservers
    except dns.resolver.NoResolverConfiguration:
        return "system: none configured (set MAILPLANE_DNS_RESOLVER)"
    return f"system ({', '.join(map(str, servers))})"


def resolver_from_settings() -> Resolver:
    """The resolver settings.MAILPLANE names (a misconfigured one fails every lookup)."""
    return _cached(*resolver_settings())


def async_resolver_from_settings() -> AsyncResolver:
    return _cached_async(*resolver_settings())


# Enough for the MX, A and AAAA answers of every destination a busy worker sees within
# their TTLs; least recently used answers go first beyond that.
ANSWER_CACHE_SIZE = 10_000


def caching_async_resolver_from_settings(*, cache_size: int = ANSWER_CACHE_SIZE) -> AsyncResolver:
    """A new asyncio resolver as settings.MAILPLANE names it, with its own `TtlCache`.

    Not shared (unlike `async_resolver_from_settings`): the caller owns the cache's
    lifetime, e.g. one per delivery provider, whose batches ask the same MX and address
    questions for every chunk.
    """
    return _async_resolver(*resolver_settings(), cache_size=cache_size)
