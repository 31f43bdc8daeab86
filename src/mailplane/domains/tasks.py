"""Celery adapters: take ids, call the service."""

from __future__ import annotations

from celery import shared_task

from mailplane.domains import selectors, services
from mailplane.domains.models import Domain


@shared_task(name="mailplane.domains.tasks.domain_verify", ignore_result=True)
def domain_verify(domain_id: int) -> None:
    domain = Domain.objects.filter(pk=domain_id).first()
    if domain is None:
        return  # deleted since it was queued
    services.domain_verify(domain=domain)


@shared_task(name="mailplane.domains.tasks.domain_verify_pending")
def domain_verify_pending() -> int:
    """Fan out one task per due domain, so a slow zone holds up no other."""
    ids = selectors.domain_list_due_for_check()
    for domain_id in ids:
        domain_verify.delay(domain_id)
    return len(ids)
