"""Celery adapters: take ids, call the service."""

from __future__ import annotations

from celery import shared_task

from mailplane.jobs import services


@shared_task(name="mailplane.jobs.tasks.job_run", acks_late=True, ignore_result=True)
def job_run(job_id: str) -> None:
    services.job_run(job_id=job_id)


@shared_task(name="mailplane.jobs.tasks.job_requeue_stale")
def job_requeue_stale() -> int:
    return services.job_requeue_stale()
