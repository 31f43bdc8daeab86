"""Resolvers: settings wiring, address parsing, NXDOMAIN vs NODATA, the TTL cache."""

from __future__ import annotations

import asyncio

import pytest

from mailplane.dns import (
    AsyncDnsPythonResolver,
    DnsPythonResolver,
    LookupFailed,
    NoData,
    NxDomain,
    Outcome,
    RecordMissing,
    Resolver,
    async_resolver_from_settings,
    caching_async_resolver_from_settings,
    mx_lookup,
    nameservers_parse,
    resolver_from_settings,
    txt_lookup,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:5353", [("127.0.0.1", 5353)]),
        ("10.0.0.2", [("10.0.0.2", 53)]),
        ("[::1]:5300", [("::1", 5300)]),
        ("::1", [("::1", 53)]),
        (" 127.0.0.1:53 , 127.0.0.2:54 ", [("127.0.0.1", 53), ("127.0.0.2", 54)]),
        ("", []),
    ],
)
def test_nameservers_parse(spec, expected):
    assert nameservers_parse(spec) == expected


@pytest.mark.parametrize("spec", ["dns.example:53", "127.0.0.1:port", "127.0.0.1:70000", "[::1"])
def test_nameservers_parse_rejects_non_addresses(spec):
    with pytest.raises(ValueError, match="invalid DNS resolver"):
        nameservers_parse(spec)


def test_settings_choose_server_and_timeout(dns_server, settings):
    resolver = resolver_from_settings()
    assert isinstance(resolver, DnsPythonResolver)
    assert resolver.spec == dns_server.address
    assert resolver.timeout == 1.0
    assert isinstance(resolver, Resolver)
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_TIMEOUT": 2.5}
    assert resolver_from_settings().timeout == 2.5


def test_malformed_setting_fails_lookups_with_the_reason(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_RESOLVER": "resolver.example:53"}
    lookup = txt_lookup("acme.test")
    assert lookup.outcome is Outcome.ERROR
    assert "invalid MAILPLANE_DNS_RESOLVER" in lookup.reason


def test_resolver_raises_missing_and_failed(dns_server):
    resolver = DnsPythonResolver(dns_server.address, 0.5)
    with pytest.raises(RecordMissing):
        resolver.resolve("nothing.test", "TXT")
    dns_server.fail("broken.test", "servfail")
    with pytest.raises(LookupFailed):
        resolver.resolve("broken.test", "TXT")


def test_nxdomain_and_nodata_are_told_apart(dns_server):
    """RFC 2308: NXDOMAIN (§2.1) says the name does not exist, NODATA (§2.2) only that
    it has no record of this type; both are RecordMissing, and lookups say which."""
    dns_server.a("acme.test", "192.0.2.1")
    sync = DnsPythonResolver(dns_server.address, 0.5)
    with pytest.raises(NxDomain, match="does not exist"):
        sync.resolve("nothing.acme.test", "MX")
    with pytest.raises(NoData, match="has no MX records"):
        sync.resolve("acme.test", "MX")
    assert issubclass(NxDomain, RecordMissing) and issubclass(NoData, RecordMissing)

    async def run() -> tuple[Exception, Exception]:
        resolver = AsyncDnsPythonResolver(dns_server.address, 0.5)
        errors = []
        for name in ("nothing.acme.test", "acme.test"):
            try:
                await resolver.resolve(name, "MX")
            except RecordMissing as exc:
                errors.append(exc)
        return errors[0], errors[1]

    nxdomain, nodata = asyncio.run(run())
    assert isinstance(nxdomain, NxDomain) and isinstance(nodata, NoData)

    missing, empty = mx_lookup("nothing.acme.test"), mx_lookup("acme.test")
    assert (missing.outcome, missing.nxdomain) == (Outcome.MISSING, True)
    assert (empty.outcome, empty.nxdomain) == (Outcome.MISSING, False)
    assert not mx_lookup("nothing.acme.test", resolver=sync).records


def _resolve_all(resolver, *questions):
    """Ask each (name, rdtype) in turn; 'missing'/'failed' stand for the exceptions."""

    async def run():
        answers = []
        for question in questions:
            if question == "sleep":
                await asyncio.sleep(1.1)
                continue
            try:
                answers.append([r.to_text() for r in await resolver.resolve(*question)])
            except RecordMissing:
                answers.append("missing")
            except LookupFailed:
                answers.append("failed")
        return answers

    return asyncio.run(run())


def test_caching_resolver_keeps_answers_for_their_ttl(dns_server):
    dns_server.mx("acme.test", "mx.acme.test")  # TTL 60
    dns_server.a("mx.acme.test", "192.0.2.1", ttl=1)
    resolver = caching_async_resolver_from_settings()
    mx, a = ("acme.test", "MX"), ("mx.acme.test", "A")

    answers = _resolve_all(resolver, mx, a, mx, a, mx, a, "sleep", mx, a)

    assert answers == [["10 mx.acme.test."], ["192.0.2.1"]] * 4
    assert len(dns_server.queried("acme.test", "MX")) == 1
    assert len(dns_server.queried("mx.acme.test", "A")) == 2  # asked again after 1 s
    # The shared resolver does not cache: domain verification sees an edit at once.
    _resolve_all(async_resolver_from_settings(), mx, mx)
    assert len(dns_server.queried("acme.test", "MX")) == 3


def test_caching_resolver_keeps_negative_answers_only_with_an_soa(dns_server):
    dns_server.a("acme.test", "192.0.2.1")
    dns_server.fail("broken.acme.test", "servfail")
    resolver = caching_async_resolver_from_settings()
    nodata, nxdomain = ("acme.test", "MX"), ("none.acme.test", "MX")
    servfail = ("broken.acme.test", "MX")

    # RFC 2308 §5: without an SOA a negative answer has no TTL: ask again every time.
    answers = _resolve_all(resolver, nodata, nxdomain, servfail, nodata, nxdomain, servfail)
    assert answers == ["missing", "missing", "failed"] * 2
    assert len(dns_server.queried("acme.test", "MX")) == 2
    assert len(dns_server.queried("none.acme.test", "MX")) == 2

    # With the zone's SOA (RFC 2308 §3) they are cached; failures never are.
    dns_server.soa("acme.test", minimum=30)
    assert _resolve_all(resolver, nodata, nxdomain, nodata, nxdomain) == ["missing"] * 4
    assert len(dns_server.queried("acme.test", "MX")) == 3
    assert len(dns_server.queried("none.acme.test", "MX")) == 3
    servfails = len(dns_server.queried("broken.acme.test", "MX"))
    assert _resolve_all(resolver, servfail) == ["failed"]
    assert len(dns_server.queried("broken.acme.test", "MX")) > servfails


def test_caching_resolver_is_bounded(dns_server):
    dns_server.a("one.acme.test", "192.0.2.1")
    dns_server.a("two.acme.test", "192.0.2.2")
    resolver = caching_async_resolver_from_settings(cache_size=1)
    one, two = ("one.acme.test", "A"), ("two.acme.test", "A")
    _resolve_all(resolver, one, one, two, one)
    assert len(dns_server.queried("one.acme.test")) == 2  # evicted by two.acme.test
    assert len(dns_server.queried("two.acme.test")) == 1


def test_caching_resolver_with_a_bad_setting_fails_every_lookup(settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_RESOLVER": "resolver.example:53"}
    resolver = caching_async_resolver_from_settings()
    assert _resolve_all(resolver, ("acme.test", "MX")) == ["failed"]
