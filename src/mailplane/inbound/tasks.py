"""Celery adapter for the inbound streams' periodic work."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mailplane.inbound.retention import inbound_messages_prune


@shared_task(name="mailplane.inbound.tasks.inbound_messages_prune")
def inbound_messages_prune_task() -> int:
    return inbound_messages_prune(now=timezone.now())
