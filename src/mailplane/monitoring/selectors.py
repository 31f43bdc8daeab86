"""Backlogs read from the database: the outbound queue and the job table.

Each figure is one aggregate query over an index (`rcpt_due` on status + next_attempt_at,
`job_status_created` on jobs), like Postfix's `qshape` reading its queue: cost grows with
the rows in the queued states, not with the delivered history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, Min, Q
from django.utils import timezone

from mailplane.jobs.models import Job, JobStatus
from mailplane.queue.models import EventSequence, QueuedRecipient, RecipientStatus
from mailplane.tenancy.models import Organization

# States a recipient leaves by being delivered, bounced, failed or suppressed.
WAITING = (RecipientStatus.QUEUED, RecipientStatus.DEFERRED, RecipientStatus.HELD)


@dataclass(frozen=True)
class QueueDepth:
    waiting: dict[str, int] = field(default_factory=dict)  # status -> recipients
    due: int = 0  # attempt time has come, no worker holds it yet
    in_flight: int = 0  # claimed by a worker under a live lease
    # How long the longest-waiting unclaimed due recipient has waited: growing while
    # `in_flight` stays 0 means no delivery worker is running.
    oldest_due_seconds: float = 0.0


@dataclass(frozen=True)
class JobBacklog:
    pending: int
    oldest_pending_seconds: float


def _age(since: datetime | None, now: datetime) -> float:
    return max(0.0, (now - since).total_seconds()) if since else 0.0


def queue_depth(*, organization: Organization | None = None) -> QueueDepth:
    """The waiting part of the queue, of one account or (operator view) of all."""
    now = timezone.now()
    rows = QueuedRecipient.objects.filter(status__in=WAITING)
    if organization is not None:
        rows = rows.filter(message__organization=organization)
    waiting = {status.value: 0 for status in WAITING}
    for row in rows.values("status").annotate(n=Count("id")).order_by():
        waiting[row["status"]] = row["n"]
    claimed = Q(claimed_until__gt=now)
    due = rows.filter(
        status__in=(RecipientStatus.QUEUED, RecipientStatus.DEFERRED), next_attempt_at__lte=now
    ).aggregate(
        n=Count("id", filter=~claimed),
        in_flight=Count("id", filter=claimed),
        oldest=Min("next_attempt_at", filter=~claimed),
    )
    return QueueDepth(
        waiting=waiting,
        due=due["n"],
        in_flight=due["in_flight"],
        oldest_due_seconds=_age(due["oldest"], now),
    )


def job_backlog() -> JobBacklog:
    """Jobs the Celery worker has not finished: a growing age means no worker is running."""
    now = timezone.now()
    pending = Job.objects.filter(status=JobStatus.PENDING).aggregate(
        n=Count("id"), oldest=Min("created_at")
    )
    return JobBacklog(pending=pending["n"], oldest_pending_seconds=_age(pending["oldest"], now))


def event_stream_head() -> int:
    """The last event number handed out (consumers compare their cursor with it)."""
    row = EventSequence.objects.order_by("pk").values_list("last", flat=True).first()
    return int(row or 0)
