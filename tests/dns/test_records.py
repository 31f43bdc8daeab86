"""Typed lookups against a real (local) authoritative server, over UDP and TCP."""

from __future__ import annotations

import asyncio

import pytest

from mailplane.dns import (
    AsyncDnsPythonResolver,
    DnsPythonResolver,
    MxRecord,
    Outcome,
    a_lookup,
    a_lookup_async,
    aaaa_lookup,
    cname_lookup,
    cname_lookup_async,
    domain_ascii,
    mx_lookup,
    mx_lookup_async,
    txt_lookup,
    txt_lookup_async,
)


def test_txt_joins_the_strings_of_each_record_and_keeps_records_apart(dns_server):
    dns_server.txt("acme.test", "v=spf1 include:_spf.example", " ~all")
    dns_server.txt("acme.test", "google-site-verification=abc")
    lookup = txt_lookup("acme.test")
    assert lookup.outcome is Outcome.FOUND
    assert sorted(lookup.records) == [
        "google-site-verification=abc",
        "v=spf1 include:_spf.example ~all",
    ]


def test_mx_sorted_by_preference_with_names_normalised(dns_server):
    dns_server.mx("acme.test", "MX2.Example.NET", preference=20)
    dns_server.mx("acme.test", "mx1.example.net", preference=5)
    dns_server.mx("acme.test", "backup.example.net", preference=50)
    lookup = mx_lookup("ACME.test.")
    assert lookup.name == "acme.test"
    assert lookup.records == (
        MxRecord(5, "mx1.example.net"),
        MxRecord(20, "mx2.example.net"),
        MxRecord(50, "backup.example.net"),
    )


def test_null_mx_is_reported_as_such(dns_server):
    dns_server.mx("nomail.test", ".", preference=0)
    (record,) = mx_lookup("nomail.test").records
    assert record.is_null and str(record) == "0 ."


def test_cname_and_addresses_follow_the_chain(dns_server):
    dns_server.cname("bounces.acme.test", "rp.mailplane.localhost")
    dns_server.a("rp.mailplane.localhost", "192.0.2.7")
    dns_server.aaaa("rp.mailplane.localhost", "2001:db8::7")
    assert cname_lookup("bounces.acme.test").records == ("rp.mailplane.localhost",)
    assert a_lookup("bounces.acme.test").records == ("192.0.2.7",)
    assert aaaa_lookup("bounces.acme.test").records == ("2001:db8::7",)


def test_nxdomain_and_nodata_are_missing_with_different_reasons(dns_server):
    dns_server.txt("sel._domainkey.acme.test", "v=DKIM1; p=abc")
    nxdomain = txt_lookup("nothing.acme.test")
    assert nxdomain.outcome is Outcome.MISSING
    assert "NXDOMAIN" in nxdomain.reason
    # An empty non-terminal exists (RFC 8020): NODATA, not NXDOMAIN.
    nodata = txt_lookup("_domainkey.acme.test")
    assert nodata.outcome is Outcome.MISSING
    assert "has no TXT records" in nodata.reason
    assert mx_lookup("sel._domainkey.acme.test").outcome is Outcome.MISSING


@pytest.mark.parametrize(("mode", "reason"), [("servfail", "SERVFAIL"), ("refused", "REFUSED")])
def test_error_rcodes_are_errors_not_missing(dns_server, mode, reason):
    dns_server.txt("acme.test", "v=spf1 -all")
    dns_server.fail("acme.test", mode)
    lookup = txt_lookup("acme.test")
    assert lookup.outcome is Outcome.ERROR
    assert reason in lookup.reason
    assert lookup.records == ()


def test_timeout_is_an_error_within_the_configured_budget(dns_server, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_TIMEOUT": 0.3}
    dns_server.txt("acme.test", "v=spf1 -all")
    dns_server.fail("acme.test", "timeout", rdtype="TXT")
    lookup = txt_lookup("acme.test")
    assert lookup.outcome is Outcome.ERROR
    assert "timeout" in lookup.reason and "0.3s" in lookup.reason
    # Only TXT was switched off.
    dns_server.mx("acme.test", "mx.example.net")
    assert mx_lookup("acme.test").found
    dns_server.heal("acme.test")
    assert txt_lookup("acme.test").found


def test_large_txt_is_truncated_over_udp_and_fetched_over_tcp(dns_server):
    value = "v=DKIM1; k=rsa; p=" + "A" * 3000  # larger than the 1232-byte EDNS payload
    dns_server.txt("big._domainkey.acme.test", value)
    assert txt_lookup("big._domainkey.acme.test").records == (value,)
    protocols = [q.protocol for q in dns_server.queried("big._domainkey.acme.test")]
    assert protocols == ["udp", "tcp"]


def test_a_2048_bit_dkim_key_fits_in_udp_thanks_to_edns(dns_server):
    from mailplane.domains.dkim import dkim_key_generate

    key = dkim_key_generate()
    dns_server.txt("s._domainkey.acme.test", key.txt_value)
    assert txt_lookup("s._domainkey.acme.test").records == (key.txt_value,)
    assert [q.protocol for q in dns_server.queried("s._domainkey.acme.test")] == ["udp"]


def test_records_edited_at_runtime_are_seen_at_once(dns_server):
    assert txt_lookup("acme.test").outcome is Outcome.MISSING
    dns_server.txt("acme.test", "hello")
    assert txt_lookup("acme.test").records == ("hello",)
    assert dns_server.remove("acme.test", "TXT") == 1
    assert txt_lookup("acme.test").outcome is Outcome.MISSING


def test_async_lookups_share_the_configuration_and_the_outcomes(dns_server, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_TIMEOUT": 0.3}
    dns_server.mx("acme.test", "b.example.net", preference=20)
    dns_server.mx("acme.test", "a.example.net", preference=10)
    dns_server.txt("acme.test", "x", "y")
    dns_server.cname("www.acme.test", "acme.test")
    dns_server.a("acme.test", "192.0.2.1")
    dns_server.fail("slow.acme.test", "timeout")

    async def run():
        return await asyncio.gather(
            mx_lookup_async("acme.test"),
            txt_lookup_async("acme.test"),
            cname_lookup_async("www.acme.test"),
            a_lookup_async("www.acme.test"),
            txt_lookup_async("slow.acme.test"),
            txt_lookup_async("none.acme.test"),
        )

    mx, txt, cname, a, slow, none = asyncio.run(run())
    assert [r.host for r in mx.records] == ["a.example.net", "b.example.net"]
    assert txt.records == ("xy",)
    assert cname.records == ("acme.test",)
    assert a.records == ("192.0.2.1",)
    assert slow.outcome is Outcome.ERROR
    assert none.outcome is Outcome.MISSING


def test_explicit_resolvers_ignore_settings(dns_server, settings):
    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_RESOLVER": "127.0.0.1:9"}
    dns_server.txt("acme.test", "direct")
    sync = DnsPythonResolver(dns_server.address, 1.0)
    assert txt_lookup("acme.test", resolver=sync).records == ("direct",)
    async_resolver = AsyncDnsPythonResolver(dns_server.address, 1.0)
    lookup = asyncio.run(txt_lookup_async("acme.test", resolver=async_resolver))
    assert lookup.records == ("direct",)


def test_domain_ascii_converts_only_what_needs_it():
    assert domain_ascii("example.test") == "example.test"
    assert domain_ascii("exämple.test") == "xn--exmple-cua.test"
    assert domain_ascii("EXÄMPLE.test") == "xn--exmple-cua.test"
    assert domain_ascii("bücher.example.") == "xn--bcher-kva.example"
    with pytest.raises(UnicodeError):
        domain_ascii("x" * 70 + "é.test")
