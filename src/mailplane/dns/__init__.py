"""DNS lookups for the whole platform: domain verification, MX routing, SPF/DKIM checks.

A pure library (not a Django app). Plug-in point: `Resolver` / `AsyncResolver`, a one-method
contract (`resolve(name, rdtype)`) so tests and other transports can stand in for dnspython.
The lookup functions turn every answer into a typed `Lookup` whose `outcome` keeps the two
kinds of failure apart, because callers must treat them differently:

    Outcome.FOUND     records came back
    Outcome.MISSING   a definite "no": NXDOMAIN or NODATA (RFC 2308 §§2.1-2.2);
                      `Lookup.nxdomain` says which
    Outcome.ERROR     no answer at all (timeout, SERVFAIL, REFUSED): ask again later

Resolvers raise, lookups do not:

    DnsError
    ├── RecordMissing   a definite "no"
    │   ├── NxDomain    the name does not exist (RFC 2308 §2.1)
    │   └── NoData      the name exists, not with this type (RFC 2308 §2.2)
    └── LookupFailed    timeout, SERVFAIL, REFUSED, no usable resolver

Configuration: settings.MAILPLANE["DNS_RESOLVER"] ("host:port[,host:port]", empty = the
system resolver from /etc/resolv.conf) and MAILPLANE["DNS_TIMEOUT"] (seconds, whole lookup).
`resolver_from_settings()` / `async_resolver_from_settings()` are shared and uncached, so
an edited record is seen at once (domain verification); `caching_async_resolver_from_settings()`
builds one with its own TTL-respecting answer cache (`TtlCache`) for the delivery path.
"""

from __future__ import annotations

from mailplane.dns.records import (
    Lookup,
    MxRecord,
    Outcome,
    a_lookup,
    a_lookup_async,
    aaaa_lookup,
    aaaa_lookup_async,
    cname_lookup,
    cname_lookup_async,
    domain_ascii,
    mx_lookup,
    mx_lookup_async,
    txt_lookup,
    txt_lookup_async,
)
from mailplane.dns.resolver import (
    AsyncDnsPythonResolver,
    AsyncResolver,
    DnsError,
    DnsPythonResolver,
    LookupFailed,
    NoData,
    NxDomain,
    RecordMissing,
    Resolver,
    TtlCache,
    async_resolver_from_settings,
    caching_async_resolver_from_settings,
    nameservers_parse,
    resolver_from_settings,
)

__all__ = [
    "AsyncDnsPythonResolver",
    "AsyncResolver",
    "DnsError",
    "DnsPythonResolver",
    "Lookup",
    "LookupFailed",
    "MxRecord",
    "NoData",
    "NxDomain",
    "Outcome",
    "RecordMissing",
    "Resolver",
    "TtlCache",
    "a_lookup",
    "a_lookup_async",
    "aaaa_lookup",
    "aaaa_lookup_async",
    "async_resolver_from_settings",
    "caching_async_resolver_from_settings",
    "cname_lookup",
    "cname_lookup_async",
    "domain_ascii",
    "mx_lookup",
    "mx_lookup_async",
    "nameservers_parse",
    "resolver_from_settings",
    "txt_lookup",
    "txt_lookup_async",
]
