"""Publishing a domain's records through Cloudflare and GoDaddy (their local stand-ins,
which serve their zones through the test DNS server): every record kind published,
updated and verified with real DNS queries; running twice writes nothing; records
Mailplane did not create are left as they were."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.dnsproviders.models import DomainDnsPublication, PublishedRecord
from mailplane.dnsproviders.services import domain_dns_publish, domain_dns_publish_start
from mailplane.domains.models import DnsRecord, RecordPurpose
from mailplane.domains.services import domain_dkim_rotate, domain_records_refresh
from mailplane.jobs.models import Job, JobStatus
from mailplane.jobs.services import job_run
from tests.dnsproviders.conftest import ZONE

PURPOSES = {p.value for p in RecordPurpose}


def publish(account, domain, provider, *, merge_spf=False, expect="success"):
    job = domain_dns_publish_start(
        organization=account.org, domain=domain, connection=provider.connection, merge_spf=merge_spf
    )
    job_run(job_id=str(job.pk))
    job = Job.objects.get(pk=job.pk)
    assert job.status == expect, (job.error, job.result)
    return job.result if expect == "success" else job


def actions(result):
    return {r["purpose"]: r["action"] for r in result["records"] if r["action"] != "kept"}


def wanted(domain):
    """What the domain asks for, as the DNS serves it."""
    return {
        (
            r.type,
            r.name,
            r.value.lower() if r.type in ("MX", "CNAME") else r.value,
            r.priority if r.type == "MX" else None,
        )
        for r in DnsRecord.objects.filter(domain=domain)
    }


def test_every_kind_is_published_verified_and_a_second_run_writes_nothing(
    account, domain, provider
):
    result = publish(account, domain, provider)
    assert actions(result) == dict.fromkeys(PURPOSES, "created")
    assert provider.records() == wanted(domain)
    assert result["zone"] == ZONE and result["provider"] == provider.kind
    assert result["verification_state"] == "verified"
    assert {v["status"] for v in result["verification"]} == {"ok"}
    domain.refresh_from_db()
    assert domain.is_verified
    assert PublishedRecord.objects.filter(domain=domain).count() == 5
    publication = DomainDnsPublication.objects.get(domain=domain)
    assert publication.published_at and publication.publishing_since is None
    assert publication.last_result == result

    writes = len(provider.fake.writes)
    again = publish(account, domain, provider)
    assert actions(again) == dict.fromkeys(PURPOSES, "unchanged")
    assert len(provider.fake.writes) == writes  # idempotent: not one write
    assert provider.records() == wanted(domain)


def test_records_of_others_are_left_exactly_as_they_were(account, domain, provider):
    provider.add_foreign("TXT", ZONE, "google-site-verification=abc123")
    provider.add_foreign("MX", ZONE, "backup-mx.elsewhere.test", priority=50)
    provider.add_foreign("A", ZONE, "192.0.2.10")
    provider.add_foreign("CNAME", f"www.{ZONE}", "acme.pages.test")
    provider.add_foreign("TXT", f"_dmarc.{ZONE}", "v=DMARC1; p=reject; rua=mailto:d@acme.test")
    foreign_before = provider.raw()

    result = publish(account, domain, provider)
    assert actions(result) == {
        "mx": "created",
        "spf": "created",
        "dkim": "created",
        "dmarc": "present",  # the customer's own DMARC policy stays
        "return_path": "created",
    }
    after = provider.raw()
    for record in foreign_before:
        assert record in after, record  # byte for byte, TTLs and ids included
    assert result["verification_state"] == "verified"

    again = publish(account, domain, provider)
    assert actions(again) == {**dict.fromkeys(PURPOSES, "unchanged"), "dmarc": "present"}
    assert provider.raw() == after


def test_a_foreign_spf_record_is_a_conflict_until_merge_is_allowed(
    account, domain, provider, settings
):
    provider.add_foreign("TXT", ZONE, "v=spf1 include:_spf.google.com ~all")
    result = publish(account, domain, provider)
    (spf,) = [r for r in result["records"] if r["purpose"] == "spf"]
    assert spf["action"] == "conflict"
    assert "only one may exist (RFC 7208 §4.5)" in spf["detail"] and "merge_spf" in spf["detail"]
    assert ("TXT", ZONE, "v=spf1 include:_spf.google.com ~all", None) in provider.records()
    assert result["verification_state"] == "dns_pending"

    include = f"include:_spf.{settings.MAILPLANE['PLATFORM_DOMAIN']}"
    merged = publish(account, domain, provider, merge_spf=True)
    (spf,) = [r for r in merged["records"] if r["purpose"] == "spf"]
    assert spf["action"] == "merged"
    spf_records = [r for r in provider.records() if r[2].startswith("v=spf1")]
    assert spf_records == [("TXT", ZONE, f"v=spf1 include:_spf.google.com {include} ~all", None)]
    assert merged["verification_state"] == "verified"

    # The platform moves: the term Mailplane added is replaced, without merge_spf again.
    settings.MAILPLANE = {**settings.MAILPLANE, "PLATFORM_DOMAIN": "newplatform.test"}
    domain_records_refresh(domain=domain)
    moved = publish(account, domain, provider)
    assert actions(moved)["spf"] == "merged"
    spf_records = [r for r in provider.records() if r[2].startswith("v=spf1")]
    assert spf_records == [
        ("TXT", ZONE, "v=spf1 include:_spf.google.com include:_spf.newplatform.test ~all", None)
    ]
    assert actions(publish(account, domain, provider))["spf"] == "present"


def test_two_foreign_spf_records_are_refused_even_with_merge(account, domain, provider):
    provider.add_foreign("TXT", ZONE, "v=spf1 include:a.test ~all")
    provider.add_foreign("TXT", ZONE, "v=spf1 include:b.test -all")
    result = publish(account, domain, provider, merge_spf=True)
    assert actions(result)["spf"] == "conflict"
    assert len([r for r in provider.records() if r[2].startswith("v=spf1")]) == 2


def test_dkim_and_return_path_names_taken_by_others_are_conflicts(account, domain, provider):
    dkim_name = f"{domain.dkim_selector}._domainkey.{ZONE}"
    provider.add_foreign("TXT", dkim_name, "v=DKIM1; p=SOMEONEELSE")
    provider.add_foreign("A", f"bounces.{ZONE}", "192.0.2.77")
    result = publish(account, domain, provider)
    details = {r["purpose"]: r for r in result["records"]}
    assert details["dkim"]["action"] == "conflict" and "RFC 6376" in details["dkim"]["detail"]
    assert details["return_path"]["action"] == "conflict"
    assert "CNAME must be the only record" in details["return_path"]["detail"]
    assert ("TXT", dkim_name, "v=DKIM1; p=SOMEONEELSE", None) in provider.records()
    assert ("A", f"bounces.{ZONE}", "192.0.2.77", None) in provider.records()
    assert result["verification_state"] == "dns_pending"  # DKIM is required


def test_every_kind_is_updated_and_the_old_dkim_key_retired_a_week_later(
    account, domain, provider, settings
):
    publish(account, domain, provider)
    old_dkim = f"{domain.dkim_selector}._domainkey.{ZONE}"

    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "PLATFORM_DOMAIN": "newplatform.test",  # SPF include and return-path target
        "MX_HOST": "mx2.newplatform.test",
    }
    domain_records_refresh(domain=domain)
    domain = domain_dkim_rotate(domain=domain)
    DnsRecord.objects.filter(domain=domain, purpose="dmarc").update(
        value=f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{ZONE}"
    )
    result = publish(account, domain, provider)
    assert actions(result) == {
        "mx": "updated",
        "spf": "updated",
        "dkim": "created",
        "dmarc": "updated",
        "return_path": "updated",
    }
    (kept,) = [r for r in result["records"] if r["action"] == "kept"]
    assert kept["name"] == old_dkim and "still verifies" in kept["detail"]
    served = provider.records()
    assert wanted(domain) <= served
    assert {r for r in served if r[0] == "MX"} == {("MX", ZONE, "mx2.newplatform.test", 10)}
    assert any(r[1] == old_dkim for r in served)  # mail signed with the old key verifies
    assert result["verification_state"] == "verified"

    assert actions(publish(account, domain, provider)) == dict.fromkeys(PURPOSES, "unchanged")
    PublishedRecord.objects.filter(domain=domain, name=old_dkim).update(
        retired_at=timezone.now() - timedelta(days=8)
    )
    later = publish(account, domain, provider)
    (deleted,) = [r for r in later["records"] if r["action"] == "deleted"]
    assert deleted["name"] == old_dkim
    assert provider.records() == wanted(domain)
    assert not PublishedRecord.objects.filter(domain=domain, name=old_dkim).exists()


def test_a_record_of_ours_deleted_by_hand_is_published_again(account, domain, provider):
    publish(account, domain, provider)
    provider.remove("MX", ZONE)
    result = publish(account, domain, provider)
    assert actions(result)["mx"] == "created"
    assert provider.records() == wanted(domain)
    assert PublishedRecord.objects.filter(domain=domain, type="MX").count() == 1


@pytest.mark.parametrize("provider", ["cloudflare"], indirect=True)
def test_cloudflare_records_of_ours_edited_by_hand_are_put_back(account, domain, provider):
    publish(account, domain, provider)
    provider.edit("MX", ZONE, "typo.example.test")
    result = publish(account, domain, provider)
    assert actions(result)["mx"] == "updated"  # same record id: still ours
    assert provider.records() == wanted(domain)


@pytest.mark.parametrize("provider", ["cloudflare"], indirect=True)
def test_cloudflare_records_are_recognised_by_their_comment_without_the_ledger(
    account, domain, provider
):
    publish(account, domain, provider)
    assert all(r["comment"].startswith("mailplane:") for r in provider.raw())
    PublishedRecord.objects.filter(domain=domain).delete()
    writes = len(provider.fake.writes)
    result = publish(account, domain, provider)
    assert actions(result) == dict.fromkeys(PURPOSES, "unchanged")
    assert len(provider.fake.writes) == writes
    assert PublishedRecord.objects.filter(domain=domain).count() == 5  # adopted again


@pytest.mark.parametrize("provider", ["godaddy"], indirect=True)
def test_godaddy_records_edited_by_hand_become_the_customers(account, domain, provider):
    """GoDaddy records carry no id or comment: Mailplane knows its own by exact content."""
    publish(account, domain, provider)
    provider.edit("TXT", f"_dmarc.{ZONE}", "v=DMARC1; p=reject")
    result = publish(account, domain, provider)
    assert actions(result)["dmarc"] == "present"
    assert ("TXT", f"_dmarc.{ZONE}", "v=DMARC1; p=reject", None) in provider.records()


@pytest.mark.parametrize("provider", ["cloudflare"], indirect=True)
def test_a_subdomain_is_published_into_its_parent_zone(account, provider):
    from mailplane.domains.services import domain_create

    sub = domain_create(organization=account.org, name=f"mail.{ZONE}", relay_server=account.relay)
    result = publish(account, sub, provider)
    assert result["zone"] == ZONE
    assert set(actions(result).values()) == {"created"}
    assert result["verification_state"] == "verified"


@pytest.mark.parametrize("provider", ["cloudflare"], indirect=True)
def test_a_pending_cloudflare_zone_is_noted(account, provider):
    from mailplane.domains.services import domain_create

    provider.fake.zones[provider.zone_id]["status"] = "pending"
    result = publish(
        account,
        domain_create(organization=account.org, name=ZONE, relay_server=account.relay),
        provider,
    )
    assert "is pending" in result["zone_note"]
    assert result["verification_state"] == "dns_pending"  # not served yet


def test_bad_credentials_fail_the_task_with_the_providers_reason(account, domain, provider):
    provider.connection.credentials = (
        {"api_token": "revoked-token-0123456789"}
        if provider.kind == "cloudflare"
        else {"api_key": "revoked_key_1", "api_secret": "revoked_secret_1"}
    )
    provider.connection.save()
    job = publish(account, domain, provider, expect="failure")
    assert "refused the API" in job.error
    assert not PublishedRecord.objects.filter(domain=domain).exists()
    assert DomainDnsPublication.objects.get(domain=domain).publishing_since is None


def test_a_domain_outside_the_accounts_zones_fails_the_task(account, provider):
    from mailplane.domains.services import domain_create

    other = domain_create(
        organization=account.org, name="not-there.test", relay_server=account.relay
    )
    job = publish(account, other, provider, expect="failure")
    assert "not-there.test" in job.error and ("zone" in job.error or "domain" in job.error)


def test_an_unavailable_provider_leaves_the_task_pending_for_a_retry(account, domain, provider):
    provider.fake.force(503, {"errors": []}, {"Retry-After": "0"}, times=50)
    job = domain_dns_publish_start(
        organization=account.org, domain=domain, connection=provider.connection
    )
    from mailplane.dnsproviders.errors import ProviderUnavailable

    with pytest.raises(ProviderUnavailable):
        job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert (job.status, job.started_at) == (JobStatus.PENDING, None)  # the sweep sends it again

    Job.objects.filter(pk=job.pk).update(attempts=4)  # the last attempt
    job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILURE and "gave up after 5 attempts" in job.error


def test_one_publish_at_a_time_per_domain(account, domain, provider):
    from mailplane.core.errors import Conflict

    domain_dns_publish_start(
        organization=account.org, domain=domain, connection=provider.connection
    )
    DomainDnsPublication.objects.filter(domain=domain).update(publishing_since=timezone.now())
    with pytest.raises(Conflict, match="being published already"):
        domain_dns_publish(domain=domain)
    DomainDnsPublication.objects.filter(domain=domain).update(
        publishing_since=timezone.now() - timedelta(hours=1)  # its worker died
    )
    assert domain_dns_publish(domain=domain)["verification_state"] == "verified"


def test_starting_twice_queues_one_task(account, domain, provider):
    first = domain_dns_publish_start(
        organization=account.org, domain=domain, connection=provider.connection
    )
    second = domain_dns_publish_start(organization=account.org, domain=domain)
    assert first.pk == second.pk
    third = domain_dns_publish_start(organization=account.org, domain=domain, merge_spf=True)
    assert third.pk != first.pk
    Job.objects.filter(pk=first.pk).update(started_at=timezone.now())  # running already
    fourth = domain_dns_publish_start(organization=account.org, domain=domain)
    assert fourth.pk not in (first.pk, third.pk)  # runs after, on the domain as it is then
