"""Celery adapters for the pools' periodic work."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mailplane.core.windows import window_prune
from mailplane.pools.models import AddressUsage
from mailplane.pools.warmup import warmup_advance


@shared_task(name="mailplane.pools.tasks.warmup_advance_daily")
def warmup_advance_daily() -> int:
    """Hourly beat; each address is judged once per UTC day (the first run after midnight)."""
    return len(warmup_advance(now=timezone.now()))


@shared_task(name="mailplane.pools.tasks.address_usage_prune")
def address_usage_prune() -> int:
    """Hourly: the warm-up's hour rows past the windows' horizon (core/windows.py)."""
    return window_prune(AddressUsage, now=timezone.now())
