"""Start, run and recover jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from mailplane.cells.routing import route_using
from mailplane.cells.selectors import organization_route
from mailplane.core.errors import DomainError, NotFound
from mailplane.jobs.models import Job, JobStatus
from mailplane.jobs.registry import handler_for
from mailplane.tenancy.models import Organization

log = logging.getLogger(__name__)

# A job claimed this long ago and still pending belonged to a worker that died.
CLAIM_LEASE = timedelta(minutes=10)
# A job never claimed after this long lost its broker message.
UNCLAIMED_GRACE = timedelta(minutes=2)
MAX_ATTEMPTS = 5


def job_start(*, organization: Organization, kind: str, payload: dict[str, Any]) -> Job:
    """Persist the job; the Celery task is sent only once the row is committed."""
    # lazy: tasks.py is this module's Celery adapter and imports it (a task module that
    # calls its service, a service that sends its task: Celery's usual pair).
    from mailplane.jobs.tasks import job_run

    job = Job.objects.create(organization=organization, kind=kind, payload=payload)
    transaction.on_commit(lambda: job_run.delay(str(job.pk)))
    return job


def job_get(*, organization: Organization, job_id: str) -> Job:
    job = Job.objects.filter(organization=organization, pk=job_id).first()
    if job is None:
        raise NotFound("task not found")
    return job


def _claim(job_id: str) -> Job | None:
    now = timezone.now()
    claimable = Q(started_at=None) | Q(started_at__lt=now - CLAIM_LEASE)
    claimed = Job.objects.filter(claimable, pk=job_id, status=JobStatus.PENDING).update(
        started_at=now, attempts=F("attempts") + 1
    )
    return Job.objects.select_related("organization").get(pk=job_id) if claimed else None


def job_secret_take(*, job: Job, kind: str, wipe: Callable[[dict[str, Any]], None]) -> bool:
    """Hand out the secrets a finished `kind` job keeps in its (encrypted) payload once:
    True for the one caller that gets them, after `wipe(payload)` has blanked them and the
    job is saved without them. The flag flips in one conditional UPDATE, so of two
    concurrent reads exactly one wins; a job of another kind, unfinished, or already taken
    gives False and is left alone."""
    if job.kind != kind or job.status != JobStatus.SUCCESS or job.secret_taken:
        return False
    if not Job.objects.filter(pk=job.pk, secret_taken=False).update(secret_taken=True):
        return False
    payload = dict(job.payload or {})
    wipe(payload)
    job.payload, job.secret_taken = payload, True
    job.save(update_fields=["payload"])
    return True


def job_set_progress(*, job: Job, progress: int) -> None:
    """Record progress; a job that reports progress is alive, so this also renews its claim
    (a long job would otherwise outlive CLAIM_LEASE and be handed to a second worker)."""
    Job.objects.filter(pk=job.pk).update(
        progress=max(0, min(100, progress)), started_at=timezone.now()
    )


def job_run(*, job_id: str) -> None:
    """Carry out one job; safe to call twice (the second call finds it claimed or done)."""
    job = _claim(job_id)
    if job is None:
        return
    # The job's account's data is in its cell: route there for the handler only.
    with route_using(organization_route(organization=job.organization)):
        _job_handle(job)


def _job_handle(job: Job) -> None:
    try:
        result = handler_for(job.kind)(job)
    except DomainError as exc:
        _finish(
            job,
            JobStatus.FAILURE,
            error=exc.message,
            result={"errors": exc.details} if exc.details else None,
        )
    except Exception:
        log.exception("job %s (%s) crashed", job.pk, job.kind)
        if job.attempts >= MAX_ATTEMPTS:
            _finish(job, JobStatus.FAILURE, error="internal error; the operator has been told")
        else:
            # Leave it pending and unclaimed: the sweep sends it again.
            Job.objects.filter(pk=job.pk).update(started_at=None)
            raise
    else:
        _finish(job, JobStatus.SUCCESS, result=result)


def _finish(job: Job, status: str, *, error: str = "", result: Any = None) -> None:
    Job.objects.filter(pk=job.pk).update(
        status=status, error=error, result=result, progress=100, finished_at=timezone.now()
    )


def job_requeue_stale() -> int:
    """Re-send jobs whose broker message was lost or whose worker died."""
    # lazy: see job_start.
    from mailplane.jobs.tasks import job_run as job_run_task

    now = timezone.now()
    stale = Job.objects.filter(status=JobStatus.PENDING).filter(
        Q(started_at=None, created_at__lt=now - UNCLAIMED_GRACE)
        | Q(started_at__lt=now - CLAIM_LEASE)
    )
    ids = [str(pk) for pk in stale.values_list("pk", flat=True)[:1000]]
    for job_id in ids:
        job_run_task.delay(job_id)
    return len(ids)
