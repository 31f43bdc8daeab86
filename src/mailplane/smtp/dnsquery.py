"""DNS lookups for message authentication, through the configured resolver.

The shared resolver (`mailplane.dns.resolver`) follows settings.MAILPLANE["DNS_RESOLVER"],
so tests point it at their local DNS server. Calls block: callers run them in the pool.
pyspf resolves through a module-level `DNSLookup` function; it is replaced here, once, so
SPF sees the same resolver (and dnspython 2's `resolve` rather than the removed `query`).

Answers are cached for their TTL (negative ones for their SOA's, RFC 2308 §5), as any
recursive resolver would: every message from the same sender asks the same SPF and DMARC
questions, and an MX under load would otherwise send three queries per message. The cache
belongs to the resolver configuration; a settings change (tests point MAILPLANE at a reset
DNS server) starts an empty one. Domain verification keeps the uncached resolver: there a
record the user has just edited must be seen at once.
"""

from __future__ import annotations

import functools
from typing import Any

import spf
from django.core.signals import setting_changed

from mailplane.dns.resolver import (
    ANSWER_CACHE_SIZE,
    DnsError,
    DnsPythonResolver,
    LookupFailed,
    RecordMissing,
    Resolver,
    resolver_from_settings,
    resolver_settings,
)


class TemporaryDnsError(Exception):
    """Timeout or SERVFAIL: the answer may exist; results become temperror."""


@functools.lru_cache(maxsize=8)
def _caching_resolver(spec: str, timeout: float) -> Resolver | None:
    try:
        return DnsPythonResolver(spec, timeout, cache_size=ANSWER_CACHE_SIZE)
    except (LookupFailed, ValueError):
        return None  # the shared resolver says why, on every lookup


def caching_resolver() -> Resolver:
    """The resolver settings.MAILPLANE names, with an answer cache (`TtlCache`)."""
    return _caching_resolver(*resolver_settings()) or resolver_from_settings()


def _settings_changed(*, setting: str, **_: Any) -> None:
    if setting == "MAILPLANE":
        _caching_resolver.cache_clear()


setting_changed.connect(_settings_changed)


def lookup(name: str, rdtype: str) -> list[Any]:
    """Records of `rdtype` at `name`; [] for NXDOMAIN/NODATA; TemporaryDnsError otherwise."""
    try:
        return list(caching_resolver().resolve(name, rdtype))
    except RecordMissing:
        return []
    except DnsError as exc:
        raise TemporaryDnsError(f"{rdtype} {name}: {exc}") from exc


def txt(name: str) -> list[bytes]:
    """Each TXT record at `name`, its strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
    return [b"".join(r.strings) for r in lookup(name, "TXT")]


def dkim_dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
    """dkimpy's dnsfunc contract: the key record's TXT bytes, or None."""
    records = txt(name.decode("ascii", "replace").rstrip("."))
    return records[0] if records else None


def _spf_lookup(
    name: str, qtype: str, tcpfallback: bool = True, timeout: float = 30
) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract: [((name, type), value), ...]."""
    try:
        answers = lookup(name, qtype)
    except TemporaryDnsError as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    out: list[tuple[tuple[str, str], Any]] = []
    for rdata in answers:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
        elif qtype == "CNAME":
            out.append(((name, qtype), rdata.target.to_text(True)))
    return out


spf.DNSLookup = _spf_lookup
