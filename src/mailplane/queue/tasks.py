"""Celery adapters for the queue's periodic work."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from mailplane.queue.retention import message_logs_prune


@shared_task(name="mailplane.queue.tasks.message_logs_prune")
def message_logs_prune_task() -> int:
    return message_logs_prune(now=timezone.now())
