"""Jobs survive lost broker messages and crashed workers, and never run twice at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from mailplane.jobs import services
from mailplane.jobs.models import Job, JobStatus
from mailplane.jobs.registry import job_handler

handled_job_ids: list[str] = []


@job_handler("test.echo")
def _echo(job: Job) -> dict:
    handled_job_ids.append(str(job.pk))
    if job.payload.get("crash"):
        raise RuntimeError("boom")
    return {"echo": job.payload["value"]}


@pytest.fixture(autouse=True)
def _reset_calls():
    handled_job_ids.clear()


def _job(account, **payload):
    return Job.objects.create(organization=account.org, kind="test.echo", payload=payload)


def test_run_succeeds_once_and_a_second_run_is_a_no_op(account):
    job = _job(account, value=3)
    services.job_run(job_id=str(job.pk))
    services.job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert (job.status, job.result, job.attempts, job.progress) == ("success", {"echo": 3}, 1, 100)
    assert handled_job_ids == [str(job.pk)]


def test_domain_error_is_a_failure_with_reason(account):
    from mailplane.core.errors import LimitReached

    @job_handler("test.limited")
    def _limited(job: Job) -> dict:
        raise LimitReached("mailbox limit reached: plan starter allows 30 mailboxes")

    job = Job.objects.create(organization=account.org, kind="test.limited", payload={})
    services.job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILURE
    assert "limit reached" in job.error


def test_crash_leaves_job_pending_for_retry_then_fails_after_max_attempts(account):
    job = _job(account, crash=True)
    for attempt in range(1, services.MAX_ATTEMPTS + 1):
        if attempt < services.MAX_ATTEMPTS:
            with pytest.raises(RuntimeError):
                services.job_run(job_id=str(job.pk))
            job.refresh_from_db()
            assert (job.status, job.started_at) == ("pending", None)
        else:
            services.job_run(job_id=str(job.pk))
    job.refresh_from_db()
    assert job.status == "failure"
    assert "internal error" in job.error
    assert "boom" not in job.error  # internals are logged, not shown to the customer


def test_claimed_job_is_not_run_again_within_its_lease(account):
    job = _job(account, value=1)
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now())
    services.job_run(job_id=str(job.pk))
    assert handled_job_ids == []
    Job.objects.filter(pk=job.pk).update(
        started_at=timezone.now() - services.CLAIM_LEASE - timedelta(seconds=1)
    )
    services.job_run(job_id=str(job.pk))
    assert handled_job_ids == [str(job.pk)]


def test_sweep_resends_lost_and_abandoned_jobs_only(account):
    from mailplane.celery import app

    app.conf.task_always_eager = True
    try:
        old = timezone.now() - services.UNCLAIMED_GRACE - timedelta(seconds=5)
        lost = _job(account, value="lost")
        fresh = _job(account, value="fresh")
        abandoned = _job(account, value="abandoned")
        Job.objects.filter(pk=lost.pk).update(created_at=old)
        Job.objects.filter(pk=abandoned.pk).update(
            created_at=old, started_at=timezone.now() - services.CLAIM_LEASE - timedelta(seconds=1)
        )
        assert services.job_requeue_stale() == 2
    finally:
        app.conf.task_always_eager = False
    statuses = {j.payload["value"]: j.status for j in Job.objects.all()}
    assert statuses == {"lost": "success", "fresh": "pending", "abandoned": "success"}
    assert str(fresh.pk) not in handled_job_ids
