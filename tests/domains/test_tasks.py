"""The periodic re-check: which domains are due, and the per-domain task."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

from django.utils import timezone

from mailplane.domains import tasks
from mailplane.domains.models import Domain, VerificationState
from mailplane.domains.selectors import domain_list_due_for_check
from mailplane.periodic import BEAT_SCHEDULE
from tests.domains.conftest import publish


def test_due_domains_are_recent_pending_and_not_just_checked(new_domain):
    now = timezone.now()
    never = new_domain("never.test")
    stale = new_domain("stale.test")
    fresh = new_domain("fresh.test")
    old = new_domain("old.test")
    verified = new_domain("verified.test")
    Domain.objects.filter(pk=stale.pk).update(last_checked_at=now - timedelta(minutes=11))
    Domain.objects.filter(pk=fresh.pk).update(last_checked_at=now - timedelta(minutes=9))
    Domain.objects.filter(pk=old.pk).update(created_at=now - timedelta(hours=49))
    Domain.objects.filter(pk=verified.pk).update(verification_state=VerificationState.VERIFIED)

    assert domain_list_due_for_check(now=now) == [never.pk, stale.pk]
    assert domain_list_due_for_check(now=now, limit=1) == [never.pk]


def test_periodic_task_fans_out_one_task_per_due_domain(new_domain):
    first, second = new_domain("one.test"), new_domain("two.test")
    with mock.patch.object(tasks.domain_verify, "delay") as delay:
        assert tasks.domain_verify_pending() == 2
    assert [c.args for c in delay.call_args_list] == [(first.pk,), (second.pk,)]


def test_domain_task_verifies_and_ignores_deleted_domains(new_domain, dns_server):
    domain = new_domain()
    publish(dns_server, domain)
    tasks.domain_verify(domain.pk)
    assert Domain.objects.get(pk=domain.pk).is_verified
    tasks.domain_verify(999_999)  # deleted since queued: nothing to do, no error


def test_registered_in_the_beat_schedule():
    entry = BEAT_SCHEDULE["domains-verify-pending"]
    assert entry["task"] == tasks.domain_verify_pending.name
    assert entry["schedule"] <= 600  # "checked more than 10 minutes ago" needs this cadence
