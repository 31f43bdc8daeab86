"""Outcomes learnt after a send was recorded: an asynchronous bounce to the VERP return
path (bounces.py), a provider's webhook (providers/webhooks.py).

Both land on the queue row as a native outcome does (through queue/transitions.py): an event,
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

from mailplane.delivery.bounce_classes import BounceRule, bounce_class, bounce_rules_of, suppresses
from mailplane.delivery.dsn import FailedRecipient, dsn_send
from mailplane.delivery.results import SendResult, Status
from mailplane.queue.models import EventType, QueuedRecipient, RecipientStatus, SuppressionReason
from mailplane.queue.transitions import Transition, transitions_apply

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


def late_outcome_transition(outcome: LateOutcome, rules: Sequence[BounceRule] = ()) -> Transition:
    """The queue transition a late outcome makes (see the module docstring)."""
    row, result = outcome.row, outcome.result
    reason = RECIPIENT_REPORTS.get(outcome.kind)
    status: RecipientStatus | None = None
    failure = outcome.kind in (EventType.BOUNCED, EventType.DEFERRED)
    klass = bounce_class(result, rules) if failure else None
    if reason is None and outcome.kind is not EventType.DEFERRED and row.status in OPEN_STATUSES:
        status = RecipientStatus(outcome.kind.value)
        permanent = result.status is Status.PERMANENT
        if outcome.kind is EventType.BOUNCED and permanent and suppresses(klass):
            reason = SuppressionReason.HARD_BOUNCE
    # Else the far end retries (deferred), the row has ended already, or the report is about
    # the recipient: an event only (and, whatever the row's status, the suppression the
    # address's owner asked for).
    return Transition(
        row=row,
        event=outcome.kind,
        status=status,
        reply=result.reply,
        remote_host=result.remote_host,
        detail=outcome.detail,
        suppress=reason,
        bounce_class=klass or "",
    )


def late_outcomes_store(outcomes: Sequence[LateOutcome], *, now: datetime) -> Failures:
    """Record the outcomes; return what the senders must be told (late_failures_report)."""
    failures: Failures = defaultdict(list)
    transitions: list[Transition] = []
    rules = bounce_rules_of(
        o.row.message_id for o in outcomes if o.kind in (EventType.BOUNCED, EventType.DEFERRED)
    )
    for outcome in outcomes:
        transition = late_outcome_transition(outcome, rules.get(outcome.row.message_id, ()))
        transitions.append(transition)
        if transition.status is None:
            continue
        # A later report in the same batch sees the row as this one leaves it.
        outcome.row.status = transition.status
        if transition.status in (RecipientStatus.BOUNCED, RecipientStatus.FAILED):
            failures[outcome.row.message_id].append((outcome.row, outcome.result))
    transitions_apply(transitions, now=now)
    return failures


def late_failures_report(failures: Failures, *, now: datetime) -> None:
    """A DSN per message to its sender (call after the transaction has committed)."""
    for rows_results in failures.values():
        dsn_send(
            message=rows_results[0][0].message,
            failed=[FailedRecipient(row.rcpt_to, result) for row, result in rows_results],
            now=now,
        )
