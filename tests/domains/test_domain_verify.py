"""domain_verify against the test DNS server: one test per way a record can be wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.domains.models import DnsRecord, Domain, RecordStatus, VerificationState
from mailplane.domains.services import domain_verify
from tests.domains.conftest import publish


def _statuses(domain: Domain) -> dict[str, str]:
    return {r.purpose: r.status for r in DnsRecord.objects.filter(domain=domain)}


def _record(domain: Domain, purpose: str) -> DnsRecord:
    return DnsRecord.objects.get(domain=domain, purpose=purpose)


def test_all_records_correct_verifies_the_domain(published):
    assert published.verification_state == VerificationState.DNS_PENDING
    before = timezone.now()
    domain = domain_verify(domain=published)
    assert domain.verification_state == VerificationState.VERIFIED
    assert domain.verified_at is not None and domain.verified_at >= before
    assert domain.last_checked_at == domain.verified_at
    assert set(_statuses(domain).values()) == {RecordStatus.OK}
    for record in DnsRecord.objects.filter(domain=domain):
        assert record.checked_at == domain.last_checked_at
        assert record.detail
    assert Domain.objects.get(pk=domain.pk).is_verified


def test_nothing_published_everything_missing(dns_server, new_domain):
    domain = domain_verify(domain=new_domain())
    assert domain.verification_state == VerificationState.DNS_PENDING
    assert domain.verified_at is None
    assert domain.last_checked_at is not None
    assert set(_statuses(domain).values()) == {RecordStatus.MISSING}
    assert "NXDOMAIN" in _record(domain, "mx").detail


@pytest.mark.parametrize("purpose", ["mx", "spf", "dkim", "dmarc"])
def test_each_required_record_missing_keeps_domain_pending(dns_server, new_domain, purpose):
    domain = new_domain()
    publish(dns_server, domain, skip=(purpose,))
    domain = domain_verify(domain=domain)
    assert domain.verification_state == VerificationState.DNS_PENDING
    statuses = _statuses(domain)
    assert statuses.pop(purpose) == RecordStatus.MISSING
    assert set(statuses.values()) == {RecordStatus.OK}
    assert _record(domain, purpose).detail.startswith("no ")


def test_return_path_is_optional(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("return_path",))
    domain = domain_verify(domain=domain)
    assert domain.verification_state == VerificationState.VERIFIED
    assert _record(domain, "return_path").status == RecordStatus.MISSING


def test_return_path_pointing_elsewhere_is_invalid_but_not_blocking(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("return_path",))
    dns_server.cname(domain.return_path_host, "bounces.other-esp.example")
    domain = domain_verify(domain=domain)
    record = _record(domain, "return_path")
    assert record.status == RecordStatus.INVALID
    assert (
        "bounces.other-esp.example" in record.detail and "rp.mailplane.localhost" in record.detail
    )
    assert domain.is_verified


def test_mx_pointing_elsewhere_is_invalid(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("mx",))
    dns_server.mx("acme.test", "aspmx.l.google.com", preference=1)
    domain = domain_verify(domain=domain)
    record = _record(domain, "mx")
    assert record.status == RecordStatus.INVALID
    assert "1 aspmx.l.google.com" in record.detail
    assert "mx.mailplane.localhost" in record.detail
    assert not domain.is_verified


def test_our_mx_among_others_is_ok_and_notes_preference(published, dns_server):
    dns_server.mx("acme.test", "primary.example.net", preference=1)
    domain = domain_verify(domain=published)
    record = _record(domain, "mx")
    assert record.status == RecordStatus.OK
    assert "primary.example.net is preferred" in record.detail


def test_two_spf_records_are_invalid_citing_rfc_7208(published, dns_server):
    dns_server.txt("acme.test", "v=spf1 include:_spf.google.com ~all")
    domain = domain_verify(domain=published)
    record = _record(domain, "spf")
    assert record.status == RecordStatus.INVALID
    assert "2 SPF records" in record.detail
    assert "RFC 7208 §4.5" in record.detail
    assert "include:_spf.google.com" in record.detail
    assert not domain.is_verified


def test_spf_without_our_include_is_invalid(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("spf",))
    dns_server.txt("acme.test", "v=spf1 include:_spf.google.com -all")
    dns_server.txt("acme.test", "google-site-verification=xyz")  # other TXT is fine
    domain = domain_verify(domain=domain)
    record = _record(domain, "spf")
    assert record.status == RecordStatus.INVALID
    assert "does not include include:_spf.mailplane.localhost" in record.detail


def test_spf_merged_with_another_provider_is_ok(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("spf",))
    dns_server.txt(
        "acme.test", "v=spf1 include:_spf.google.com +include:_spf.mailplane.localhost ~all"
    )
    assert _record(domain_verify(domain=domain), "spf").status == RecordStatus.OK


def test_txt_without_spf_is_missing_and_says_what_was_found(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("spf",))
    dns_server.txt("acme.test", "google-site-verification=xyz")
    record = _record(domain_verify(domain=domain), "spf")
    assert record.status == RecordStatus.MISSING
    assert "google-site-verification=xyz" in record.detail


def test_wrong_dkim_key_is_invalid(dns_server, new_domain):
    from mailplane.domains.dkim import dkim_key_generate

    domain = new_domain()
    publish(dns_server, domain, skip=("dkim",))
    other = dkim_key_generate(bits=1024)
    dns_server.txt(f"{domain.dkim_selector}._domainkey.acme.test", other.txt_value)
    domain = domain_verify(domain=domain)
    record = _record(domain, "dkim")
    assert record.status == RecordStatus.INVALID
    assert "is not this domain's key" in record.detail
    assert not domain.is_verified


def test_dkim_key_split_into_strings_with_spaces_is_ok(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("dkim",))
    key = domain.dkim_public_key
    # How DNS panels often store long keys: several strings, folding whitespace inside p=.
    dns_server.txt(
        f"{domain.dkim_selector}._domainkey.acme.test",
        "v=DKIM1; k=rsa; p=" + key[:200],
        " " + key[200:],
    )
    assert _record(domain_verify(domain=domain), "dkim").status == RecordStatus.OK


def test_revoked_dkim_key_is_invalid(dns_server, new_domain):
    domain = new_domain()
    publish(dns_server, domain, skip=("dkim",))
    dns_server.txt(f"{domain.dkim_selector}._domainkey.acme.test", "v=DKIM1; p=")
    record = _record(domain_verify(domain=domain), "dkim")
    assert record.status == RecordStatus.INVALID
    assert "revoked" in record.detail


def test_dmarc_any_policy_ok_but_not_two_records(published, dns_server):
    dns_server.remove("_dmarc.acme.test", "TXT")
    dns_server.txt("_dmarc.acme.test", "v=DMARC1; p=reject")
    domain = domain_verify(domain=published)
    assert _record(domain, "dmarc").detail == "DMARC record found (p=reject)"
    assert domain.is_verified

    dns_server.txt("_dmarc.acme.test", "v=DMARC1; p=none")
    domain = domain_verify(domain=domain)
    record = _record(domain, "dmarc")
    assert record.status == RecordStatus.INVALID
    assert "RFC 7489 §6.6.3" in record.detail


def test_lookup_timeout_is_error_and_domain_stays_pending(published, dns_server):
    dns_server.fail(f"{published.dkim_selector}._domainkey.acme.test", "timeout")
    domain = domain_verify(domain=published)
    record = _record(domain, "dkim")
    assert record.status == RecordStatus.ERROR
    assert "timeout" in record.detail and "will check again" in record.detail
    assert domain.verification_state == VerificationState.DNS_PENDING
    assert domain.verified_at is None
    assert domain.last_checked_at is not None


def test_servfail_is_error(published, dns_server):
    dns_server.fail("acme.test", "servfail", rdtype="MX")
    domain = domain_verify(domain=published)
    record = _record(domain, "mx")
    assert record.status == RecordStatus.ERROR
    assert "SERVFAIL" in record.detail
    assert _record(domain, "spf").status == RecordStatus.OK
    assert not domain.is_verified


def test_verified_domain_survives_a_failed_lookup_but_not_a_broken_record(published, dns_server):
    domain = domain_verify(domain=published)
    verified_at = domain.verified_at
    assert domain.is_verified

    dns_server.fail("acme.test", "servfail")  # says nothing about the records
    domain = domain_verify(domain=domain)
    assert domain.is_verified and domain.verified_at == verified_at
    assert _record(domain, "spf").status == RecordStatus.ERROR

    dns_server.heal("acme.test")
    dns_server.remove("acme.test", "TXT")  # SPF deleted: now it is broken
    domain = domain_verify(domain=domain)
    assert domain.verification_state == VerificationState.DNS_PENDING
    assert domain.verified_at is None
    assert _record(domain, "spf").status == RecordStatus.MISSING

    publish(dns_server, domain, skip=("mx", "dkim", "dmarc", "return_path"))
    domain = domain_verify(domain=domain)
    assert domain.is_verified and domain.verified_at > verified_at


def test_mailboxes_keep_working_when_domain_falls_back(published, dns_server, account):
    from mailplane.mailboxes.models import Mailbox
    from mailplane.mailboxes.services import mailbox_create, mailbox_validate

    domain = domain_verify(domain=published)
    spec = mailbox_validate(
        organization=account.org,
        data={"email": "jane", "domain": domain.pk, "relay_server": account.relay.pk},
    )
    mailbox = mailbox_create(organization=account.org, spec=spec)
    dns_server.remove("acme.test")
    assert not domain_verify(domain=domain).is_verified
    assert Mailbox.objects.filter(pk=mailbox.pk).exists()


def test_lookups_run_in_parallel(published, dns_server, settings):
    """Five timeouts cost one timeout, not five: the API call stays bounded."""
    import time

    settings.MAILPLANE = {**settings.MAILPLANE, "DNS_TIMEOUT": 0.5}
    for record in published.dns_records.all():
        dns_server.fail(record.name, "timeout")
    started = time.monotonic()
    domain = domain_verify(domain=published)
    assert time.monotonic() - started < 2.0  # sequential would be >= 2.5 s
    assert set(_statuses(domain).values()) == {RecordStatus.ERROR}


def test_deleted_while_checking_is_not_found(published, dns_server):
    from mailplane.core.errors import NotFound

    Domain.objects.filter(pk=published.pk).delete()
    with pytest.raises(NotFound):
        domain_verify(domain=published)


def test_last_checked_at_always_moves(published, dns_server):
    first = domain_verify(domain=published).last_checked_at
    Domain.objects.filter(pk=published.pk).update(last_checked_at=first - timedelta(hours=1))
    second = domain_verify(domain=Domain.objects.get(pk=published.pk)).last_checked_at
    assert second >= first
