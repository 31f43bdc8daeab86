"""Queue and job backlogs as the monitoring figures read them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from mailplane.delivery.claims import recipients_claim
from mailplane.jobs.models import Job
from mailplane.monitoring.selectors import event_stream_head, job_backlog, queue_depth
from mailplane.queue.models import QueuedRecipient, RecipientStatus
from mailplane.queue.services import message_enqueue
from tests.support.fixtures import Account

RAW = b"From: a@acme.test\r\nTo: x@dest.test\r\nSubject: depth\r\n\r\nbody\r\n"


def _enqueue(account: Account, recipients: list[str]) -> None:
    message_enqueue(
        organization=account.org, mail_from="a@acme.test", recipients=recipients, raw=RAW
    )


def test_depth_counts_waiting_states_due_and_in_flight(
    account: Account, other_account: Account
) -> None:
    _enqueue(account, [f"r{i}@dest.test" for i in range(5)])
    _enqueue(other_account, ["o1@dest.test", "o2@dest.test"])
    later = timezone.now() + timedelta(hours=1)
    # Two of the account's recipients deferred to later (what a 4xx reply leaves).
    deferred = QueuedRecipient.objects.filter(message__organization=account.org)[:2]
    QueuedRecipient.objects.filter(pk__in=[r.pk for r in deferred]).update(
        status=RecipientStatus.DEFERRED, next_attempt_at=later
    )
    mine = queue_depth(organization=account.org)
    assert mine.waiting == {"queued": 3, "deferred": 2, "held": 0}
    assert mine.due == 3
    assert mine.in_flight == 0
    assert mine.oldest_due_seconds >= 0

    everyone = queue_depth()
    assert everyone.waiting["queued"] == 5
    assert everyone.due == 5

    # A worker claims two due rows: they leave "due" for "in flight".
    claimed = recipients_claim(
        worker_id="w1", limit=2, lease=timedelta(minutes=5), now=timezone.now()
    )
    assert len(claimed) == 2
    after = queue_depth()
    assert (after.due, after.in_flight) == (3, 2)


def test_oldest_due_age_grows_with_the_wait(account: Account) -> None:
    _enqueue(account, ["late@dest.test"])
    QueuedRecipient.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=10))
    depth = queue_depth()
    assert 600 <= depth.oldest_due_seconds < 700


def test_delivered_history_is_not_counted(account: Account) -> None:
    _enqueue(account, ["done@dest.test", "left@dest.test"])
    QueuedRecipient.objects.filter(rcpt_to="done@dest.test").update(
        status=RecipientStatus.DELIVERED
    )
    assert queue_depth().waiting["queued"] == 1


def test_job_backlog_and_event_head(account: Account, db: Any) -> None:
    head = event_stream_head()
    _enqueue(account, ["a@dest.test", "b@dest.test"])
    assert event_stream_head() == head + 2  # one "queued" event per recipient
    assert job_backlog().pending == 0
    Job.objects.create(organization=account.org, kind="mailbox_create", payload={})
    old = Job.objects.create(organization=account.org, kind="mailbox_create", payload={})
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(seconds=90))
    backlog = job_backlog()
    assert backlog.pending == 2
    assert 90 <= backlog.oldest_pending_seconds < 150
