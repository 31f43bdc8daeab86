"""Celery adapters for the reputation's periodic work."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mailplane.core.windows import window_prune
from mailplane.reputation.models import CapUsage
from mailplane.reputation.pause import reputation_evaluate


@shared_task(name="mailplane.reputation.tasks.reputation_evaluate_recent")
def reputation_evaluate_recent() -> int:
    """Every few minutes: pause what crossed a threshold over the last day."""
    return len(reputation_evaluate(now=timezone.now()))


@shared_task(name="mailplane.reputation.tasks.cap_usage_prune")
def cap_usage_prune() -> int:
    """Hourly: the caps' hour rows past the windows' horizon (core/windows.py)."""
    return window_prune(CapUsage, now=timezone.now())
