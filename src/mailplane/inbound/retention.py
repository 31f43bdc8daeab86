"""Received messages past their account's log retention are deleted, as the message log
is (queue/retention.py: the same `log_retention_days`, bounded batches per transaction,
so neither the MX nor the API waits on a long delete)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from mailplane.cells.routing import data_atomic
from mailplane.inbound.models import InboundMessage
from mailplane.tenancy.models import Organization

log = logging.getLogger("mailplane.inbound.retention")

BATCH = 500


def inbound_messages_prune(*, now: datetime, batch: int = BATCH, max_batches: int = 1000) -> int:
    """Delete every account's expired received messages; returns how many went."""
    deleted = 0
    batches = 0
    for organization in Organization.objects.order_by("pk").iterator():
        before = now - timedelta(days=organization.log_retention_days)
        while batches < max_batches:
            ids = list(
                InboundMessage.objects.filter(organization=organization, created_at__lt=before)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                break
            with data_atomic():
                InboundMessage.objects.filter(pk__in=ids).delete()
            batches += 1
            deleted += len(ids)
            if len(ids) < batch:
                break
    if deleted:
        log.info("pruned %d inbound messages past their retention", deleted)
    return deleted
