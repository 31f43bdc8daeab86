"""Resolver configuration: settings wiring and address parsing."""

from __future__ import annotations

import pytest

from mailplane.dns import (
    DnsPythonResolver,
    LookupFailed,
    Outcome,
    RecordMissing,
    Resolver,
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
