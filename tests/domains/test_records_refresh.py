"""domain_records_refresh and domain_dkim_rotate: the records a domain asks for follow the
platform's names and the domain's current DKIM key."""

from __future__ import annotations

from mailplane.domains.models import DnsRecord, RecordStatus
from mailplane.domains.services import domain_dkim_rotate, domain_records_refresh


def test_refresh_follows_the_platform_and_resets_only_what_changed(new_domain, settings):
    domain = new_domain()
    DnsRecord.objects.filter(domain=domain).update(status=RecordStatus.OK, detail="found")
    assert domain_records_refresh(domain=domain) == []

    settings.MAILPLANE = {**settings.MAILPLANE, "MX_HOST": "mx9.platform.test"}
    assert domain_records_refresh(domain=domain) == ["mx"]
    mx = DnsRecord.objects.get(domain=domain, purpose="mx")
    assert (mx.value, mx.status, mx.detail) == ("mx9.platform.test", RecordStatus.PENDING, "")
    assert set(
        DnsRecord.objects.filter(domain=domain)
        .exclude(purpose="mx")
        .values_list("status", flat=True)
    ) == {RecordStatus.OK}


def test_rotation_gives_a_new_selector_key_and_dkim_record(new_domain):
    domain = new_domain()
    old_selector, old_key = domain.dkim_selector, domain.dkim_private_key
    rotated = domain_dkim_rotate(domain=domain)
    assert rotated.dkim_selector != old_selector and rotated.dkim_private_key != old_key
    dkim = DnsRecord.objects.get(domain=domain, purpose="dkim")
    assert dkim.name == f"{rotated.dkim_selector}._domainkey.acme.test"
    assert dkim.value == f"v=DKIM1; k=rsa; p={rotated.dkim_public_key}"
    assert dkim.status == RecordStatus.PENDING
