"""Celery adapters for the reputation's periodic work."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mailplane.reputation.pause import reputation_evaluate


@shared_task(name="mailplane.reputation.tasks.reputation_evaluate_recent")
def reputation_evaluate_recent() -> int:
    """Every few minutes: pause what crossed a threshold over the last day."""
    return len(reputation_evaluate(now=timezone.now()))
