"""Outcomes learnt after a send was recorded: an asynchronous bounce to the VERP return
path (bounces.py), a provider's webhook (provider_webhooks.py).

Both land on the queue row as a native outcome does (processor.outcomes_record): an event,
the row's status and last reply, a hard-bounce suppression, and a DSN to the sender. The
writes go in the caller's transaction (`late_outcomes_store`); the DSNs go out once it has
committed (`late_failures_report`), so a rolled-back report tells no one.

A provider may also report what the recipient did with a delivered message: a spam
complaint or an unsubscribe. That is an event and a suppression only: the row stays as it
is (the mail was delivered) and the sender gets no DSN (nothing failed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from mailplane.delivery.dsn import FailedRecipient
from mailplane.delivery.processor import dsn_send, suppression_for
from mailplane.delivery.results import SendResult, Status
from mailplane.queue.models import (
    DeliveryEvent,
    EventType,
    QueuedRecipient,
    RecipientStatus,
    Suppression,
    SuppressionReason,
)

# Rows a late outcome may move: the far end holds them (delivered = accepted there, and a
# bounce may follow), or a retry of a send that did in fact go is still pending. Bounced,
# failed and suppressed rows keep their status; the report is still logged as an event.
OPEN_STATUSES = frozenset(
    {RecipientStatus.DELIVERED, RecipientStatus.QUEUED, RecipientStatus.DEFERRED}
)

# Reports about the recipient rather than the delivery, and the suppression each earns.
RECIPIENT_REPORTS = {
    EventType.COMPLAINED: SuppressionReason.COMPLAINT,
    EventType.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBED,
}

# Failed rows by message: one DSN per message, listing its failed recipients.
Failures = dict[int, list[tuple[QueuedRecipient, SendResult]]]


@dataclass(frozen=True, slots=True)
class LateOutcome:
    row: QueuedRecipient  # with .message loaded
    kind: EventType
    result: SendResult
    detail: str  # the event's detail: where the report came from (and its id, to dedupe)


def late_outcomes_store(outcomes: Sequence[LateOutcome], *, now: datetime) -> Failures:
    """Record the outcomes; return what the senders must be told (late_failures_report)."""
    failures: Failures = defaultdict(list)
    events: list[DeliveryEvent] = []
    suppressions: list[Suppression] = []
    with transaction.atomic():
        for outcome in outcomes:
            row, result = outcome.row, outcome.result
            events.append(
                DeliveryEvent(
                    organization_id=row.message.organization_id,
                    message_id=row.message_id,
                    recipient_id=row.pk,
                    type=outcome.kind,
                    remote_reply=result.reply,
                    remote_host=result.remote_host,
                    detail=outcome.detail,
                )
            )
            reason = RECIPIENT_REPORTS.get(outcome.kind)
            if reason is not None:
                # Whatever the row's status: the address's owner asked for no more mail.
                suppressions.append(suppression_for(row, result, reason))
                continue
            if outcome.kind is EventType.DEFERRED or row.status not in OPEN_STATUSES:
                continue  # the far end retries; or the row has ended already
            row.status = RecipientStatus(outcome.kind.value)
            QueuedRecipient.objects.filter(pk=row.pk).update(
                status=row.status,
                last_reply=result.reply[:2000],
                claimed_by="",
                claimed_until=None,
                updated_at=now,
            )
            if outcome.kind is EventType.BOUNCED and result.status is Status.PERMANENT:
                suppressions.append(suppression_for(row, result))
            if outcome.kind in (EventType.BOUNCED, EventType.FAILED):
                failures[row.message_id].append((row, result))
        DeliveryEvent.objects.bulk_create(events)
        Suppression.objects.bulk_create(suppressions, ignore_conflicts=True)
    return failures


def late_failures_report(failures: Failures, *, now: datetime) -> None:
    """A DSN per message to its sender (call after the transaction has committed)."""
    for rows_results in failures.values():
        dsn_send(
            message=rows_results[0][0].message,
            failed=[FailedRecipient(row.rcpt_to, result) for row, result in rows_results],
            now=now,
        )
