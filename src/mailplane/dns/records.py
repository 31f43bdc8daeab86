"""Typed lookups: TXT, MX, CNAME, A, AAAA, each as a `Lookup` that never raises.

Each record type has a sync function (`txt_lookup`) and an asyncio twin
(`txt_lookup_async`) sharing one parser, so the control plane and the data plane read the
DNS the same way. Names come back lower-case without the trailing dot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

import dns.name
import dns.rdata

from mailplane.dns.resolver import (
    AsyncResolver,
    LookupFailed,
    NxDomain,
    RecordMissing,
    Resolver,
    async_resolver_from_settings,
    resolver_from_settings,
)

T = TypeVar("T")


class Outcome(StrEnum):
    FOUND = "found"
    MISSING = "missing"  # definite: NXDOMAIN / NODATA
    ERROR = "error"  # temporary: timeout, SERVFAIL, REFUSED


@dataclass(frozen=True, slots=True)
class Lookup(Generic[T]):
    name: str
    rdtype: str
    outcome: Outcome
    records: tuple[T, ...] = ()
    reason: str = ""  # why MISSING or ERROR, for people
    # MISSING because the name does not exist at all (NXDOMAIN, RFC 2308 §2.1), not only
    # this type (NODATA, §2.2): mail routing bounces the first and falls back on the second.
    nxdomain: bool = False

    @property
    def found(self) -> bool:
        return self.outcome is Outcome.FOUND


@dataclass(frozen=True, slots=True, order=True)
class MxRecord:
    preference: int
    host: str  # "" for a null MX (RFC 7505): the domain accepts no mail

    @property
    def is_null(self) -> bool:
        return self.host == ""

    def __str__(self) -> str:
        return f"{self.preference} {self.host or '.'}"


def domain_ascii(domain: str) -> str:
    """The name to ask the DNS for: ASCII names as they are, others as A-labels.

    The standard library's IDNA codec (IDNA 2003 with nameprep) needs no extra dependency;
    it differs from IDNA 2008 only for a few characters it maps instead of encoding (ß to
    ss, final sigma, joiners). Raises UnicodeError for a name without an A-label form.
    """
    if domain.isascii():
        return domain
    return domain.rstrip(".").encode("idna").decode("ascii")


def _host(name: dns.name.Name) -> str:
    if name == dns.name.root:
        return ""
    return str(name.to_text(omit_final_dot=True)).lower()


def _parse_txt(rdatas: Sequence[dns.rdata.Rdata]) -> tuple[str, ...]:
    # A TXT record is one or more <character-string>s of at most 255 octets; SPF
    # (RFC 7208 §3.3) and DKIM (RFC 6376 §3.6.2.2) join them with nothing in between.
    return tuple(
        b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
        for rdata in rdatas
    )


def _parse_mx(rdatas: Sequence[dns.rdata.Rdata]) -> tuple[MxRecord, ...]:
    # RFC 5321 §5.1: lower preference first; ties in any order (we sort by name for stability).
    return tuple(
        sorted(
            MxRecord(int(rdata.preference), _host(rdata.exchange))  # type: ignore[attr-defined]
            for rdata in rdatas
        )
    )


def _parse_cname(rdatas: Sequence[dns.rdata.Rdata]) -> tuple[str, ...]:
    return tuple(_host(rdata.target) for rdata in rdatas)  # type: ignore[attr-defined]


def _parse_address(rdatas: Sequence[dns.rdata.Rdata]) -> tuple[str, ...]:
    return tuple(sorted(str(rdata.address) for rdata in rdatas))  # type: ignore[attr-defined]


Parser = Callable[[Sequence[dns.rdata.Rdata]], tuple[T, ...]]


def _normal(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _lookup(resolver: Resolver | None, name: str, rdtype: str, parse: Parser[T]) -> Lookup[T]:
    name = _normal(name)
    try:
        rdatas = (resolver or resolver_from_settings()).resolve(name, rdtype)
    except RecordMissing as exc:
        return _missing(name, rdtype, exc)
    except LookupFailed as exc:
        return Lookup(name, rdtype, Outcome.ERROR, reason=str(exc))
    return _result(name, rdtype, parse(rdatas))


async def _lookup_async(
    resolver: AsyncResolver | None, name: str, rdtype: str, parse: Parser[T]
) -> Lookup[T]:
    name = _normal(name)
    try:
        rdatas = await (resolver or async_resolver_from_settings()).resolve(name, rdtype)
    except RecordMissing as exc:
        return _missing(name, rdtype, exc)
    except LookupFailed as exc:
        return Lookup(name, rdtype, Outcome.ERROR, reason=str(exc))
    return _result(name, rdtype, parse(rdatas))


def _missing(name: str, rdtype: str, exc: RecordMissing) -> Lookup[T]:
    return Lookup(
        name, rdtype, Outcome.MISSING, reason=str(exc), nxdomain=isinstance(exc, NxDomain)
    )


def _result(name: str, rdtype: str, records: tuple[T, ...]) -> Lookup[T]:
    if not records:
        return Lookup(name, rdtype, Outcome.MISSING, reason=f"{name} has no {rdtype} records")
    return Lookup(name, rdtype, Outcome.FOUND, records)


def txt_lookup(name: str, *, resolver: Resolver | None = None) -> Lookup[str]:
    """Every TXT record at `name`, each with its strings joined."""
    return _lookup(resolver, name, "TXT", _parse_txt)


def mx_lookup(name: str, *, resolver: Resolver | None = None) -> Lookup[MxRecord]:
    """MX records at `name`, most preferred first."""
    return _lookup(resolver, name, "MX", _parse_mx)


def cname_lookup(name: str, *, resolver: Resolver | None = None) -> Lookup[str]:
    """The CNAME target of `name` (one at most, RFC 2181 §10.1)."""
    return _lookup(resolver, name, "CNAME", _parse_cname)


def a_lookup(name: str, *, resolver: Resolver | None = None) -> Lookup[str]:
    return _lookup(resolver, name, "A", _parse_address)


def aaaa_lookup(name: str, *, resolver: Resolver | None = None) -> Lookup[str]:
    return _lookup(resolver, name, "AAAA", _parse_address)


async def txt_lookup_async(name: str, *, resolver: AsyncResolver | None = None) -> Lookup[str]:
    return await _lookup_async(resolver, name, "TXT", _parse_txt)


async def mx_lookup_async(name: str, *, resolver: AsyncResolver | None = None) -> Lookup[MxRecord]:
    return await _lookup_async(resolver, name, "MX", _parse_mx)


async def cname_lookup_async(name: str, *, resolver: AsyncResolver | None = None) -> Lookup[str]:
    return await _lookup_async(resolver, name, "CNAME", _parse_cname)


async def a_lookup_async(name: str, *, resolver: AsyncResolver | None = None) -> Lookup[str]:
    return await _lookup_async(resolver, name, "A", _parse_address)


async def aaaa_lookup_async(name: str, *, resolver: AsyncResolver | None = None) -> Lookup[str]:
    return await _lookup_async(resolver, name, "AAAA", _parse_address)
