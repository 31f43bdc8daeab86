"""Log retention: messages (rows, bodies, recipients, events, server links) older than
their account's retention are deleted, a bounded batch per transaction.

Seed 002 keeps logs 30 days by default (tenancy/plans.py; an account may be given another
number). Pruning works from the oldest message up, by primary key, `BATCH` at a time:
each transaction locks at most that many messages and their rows, so the delivery
workers and the send API never wait on a long delete, and a crash mid-way loses nothing
but the batch in flight (the next run goes on). A message with a recipient still waiting
(queued, deferred, held) is kept whatever its age: its log is not finished.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db.models import Exists, OuterRef

from mailplane.cells.routing import data_atomic
from mailplane.queue.models import OutboundMessage, QueuedRecipient, RecipientStatus
from mailplane.tenancy.models import Organization

log = logging.getLogger("mailplane.queue.retention")

BATCH = 500
WAITING = (RecipientStatus.QUEUED, RecipientStatus.DEFERRED, RecipientStatus.HELD)


def _expired_ids(organization: Organization, *, before: datetime, limit: int) -> list[int]:
    waiting = QueuedRecipient.objects.filter(message=OuterRef("pk"), status__in=WAITING)
    return list(
        OutboundMessage.objects.filter(organization=organization, created_at__lt=before)
        .exclude(Exists(waiting))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def message_logs_prune(*, now: datetime, batch: int = BATCH, max_batches: int = 1000) -> int:
    """Delete every account's expired messages; returns how many went. At most
    `max_batches` transactions per call (the next periodic run goes on)."""
    deleted = 0
    batches = 0
    for organization in Organization.objects.order_by("pk").iterator():
        before = now - timedelta(days=organization.log_retention_days)
        while batches < max_batches:
            ids = _expired_ids(organization, before=before, limit=batch)
            if not ids:
                break
            with data_atomic():
                # The delete cascades to bodies, recipients, events and server links.
                OutboundMessage.objects.filter(pk__in=ids).delete()
            batches += 1
            deleted += len(ids)
            if len(ids) < batch:
                break
    if deleted:
        log.info("pruned %d messages past their retention in %d batches", deleted, batches)
    return deleted
