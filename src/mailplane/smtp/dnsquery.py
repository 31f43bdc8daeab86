"""DNS lookups for message authentication, through the configured resolver.

The shared resolver (`mailplane.dns.resolver`) follows settings.MAILPLANE["DNS_RESOLVER"],
so tests point it at their local DNS server. Calls block: callers run them in the pool.
pyspf resolves through a module-level `DNSLookup` function; it is replaced here, once, so
SPF sees the same resolver (and dnspython 2's `resolve` rather than the removed `query`).
"""

from __future__ import annotations

from typing import Any

import spf

from mailplane.dns.resolver import DnsError, RecordMissing, resolver_from_settings


class TemporaryDnsError(Exception):
    """Timeout or SERVFAIL: the answer may exist; results become temperror."""


def lookup(name: str, rdtype: str) -> list[Any]:
    """Records of `rdtype` at `name`; [] for NXDOMAIN/NODATA; TemporaryDnsError otherwise."""
    try:
        return list(resolver_from_settings().resolve(name, rdtype))
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
