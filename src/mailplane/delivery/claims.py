"""The queue manager's claim: take a batch of due recipients under a lease.

PostgreSQL: SELECT … FOR UPDATE SKIP LOCKED, so any number of workers on any number of
hosts take disjoint batches without waiting on each other. SQLite (one worker): the same
query, then a conditional UPDATE that only takes rows still unclaimed. Either way a row
is someone's until `claimed_until`.

Leases are short (DELIVERY_LEASE_SECONDS, 30 s by default) and the worker renews them on a
heartbeat (`recipients_renew`) for as long as it still holds the rows: a worker that dies
stops renewing and its rows are due again within one lease, while a live worker's slow
delivery (a receiver that takes minutes over DATA) never has its claim taken and sent twice.

Two lanes (QueuedRecipient.priority): each claim takes the due interactive rows
(transactional streams, SMTP submissions, DSNs) first and fills what room is left with
bulk rows (broadcast streams), at most `bulk_limit` of them: the worker keeps a share of
its window for interactive mail (worker.py), so a broadcast backlog of any size delays a
transactional message by at most one window of sends (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q

from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.queue.models import Priority, QueuedRecipient, RecipientStatus
from mailplane.relays.models import RelayServer

# Scheduled rows are due at their send time like deferred ones at their retry time.
DUE_STATUSES = (RecipientStatus.QUEUED, RecipientStatus.DEFERRED, RecipientStatus.SCHEDULED)


def _unclaimed(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def _lane_claim(
    *, priority: Priority, worker_id: str, limit: int, until: datetime, now: datetime
) -> list[int]:
    """Claim up to `limit` due rows of one lane; return their ids."""
    if limit <= 0:
        return []
    due = (
        QueuedRecipient.objects.filter(
            priority=priority, status__in=DUE_STATUSES, next_attempt_at__lte=now
        )
        .filter(_unclaimed(now))
        .order_by("next_attempt_at", "id")
    )
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            ids = list(due.select_for_update(skip_locked=True).values_list("id", flat=True)[:limit])
            if ids:
                QueuedRecipient.objects.filter(pk__in=ids).update(
                    claimed_by=worker_id, claimed_until=until
                )
        return ids
    ids = list(due.values_list("id", flat=True)[:limit])
    if ids:
        QueuedRecipient.objects.filter(pk__in=ids).filter(_unclaimed(now)).filter(
            status__in=DUE_STATUSES
        ).update(claimed_by=worker_id, claimed_until=until)
    return ids


def recipients_claim(
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    now: datetime,
    bulk_limit: int | None = None,
) -> list[QueuedRecipient]:
    """Claim up to `limit` due rows for `worker_id` until now + lease, grouped by domain:
    interactive rows first, then at most `bulk_limit` (None: the rest of `limit`) bulk."""
    until = now + lease
    ids = _lane_claim(
        priority=Priority.INTERACTIVE, worker_id=worker_id, limit=limit, until=until, now=now
    )
    room = limit - len(ids)
    if bulk_limit is not None:
        room = min(room, bulk_limit)
    ids += _lane_claim(
        priority=Priority.BULK, worker_id=worker_id, limit=room, until=until, now=now
    )
    if not ids:
        return []
    rows = list(
        QueuedRecipient.objects.filter(
            pk__in=ids, claimed_by=worker_id, claimed_until=until
        ).select_related("message")
    )
    _attach_shared(rows)
    # Grouped by destination so one connection carries a domain's messages; interactive
    # rows first, so that each leads its destination's group and goes out on the first
    # connection, ahead of the bulk rows claimed with it.
    return sorted(rows, key=lambda r: (r.priority, r.rcpt_domain, r.pk))


def recipients_renew(
    *, worker_id: str, ids: Collection[int], lease: timedelta, now: datetime
) -> set[int]:
    """Extend the lease on those of `ids` that `worker_id` still holds; return the others
    (taken by another worker, or finished meanwhile).

    Renewing a lease that ran out but that nobody took is fine: no one else can have sent
    the row meanwhile, since a claim rewrites `claimed_by`. PostgreSQL: rows another
    transaction holds at this moment (our own record of them, another worker's claim of a
    lease that ran out, a late outcome) are skipped, never waited on, so a renewal cannot
    deadlock with the record; if still ours they are renewed on the next beat. Chunked
    under SQLite's variable limit.
    """
    ordered = sorted(ids)
    until = now + lease
    gone: set[int] = set()
    for i in range(0, len(ordered), 500):
        chunk = ordered[i : i + 500]
        mine = QueuedRecipient.objects.filter(
            pk__in=chunk, claimed_by=worker_id, status__in=DUE_STATUSES
        )
        with transaction.atomic():
            if connection.features.has_select_for_update_skip_locked:
                free = list(mine.select_for_update(skip_locked=True).values_list("pk", flat=True))
                QueuedRecipient.objects.filter(pk__in=free).update(claimed_until=until)
            else:
                mine.update(claimed_until=until)
        gone.update(
            QueuedRecipient.objects.filter(pk__in=chunk)
            .exclude(claimed_by=worker_id, status__in=DUE_STATUSES)
            .values_list("pk", flat=True)
        )
    return gone


def _attach_shared(rows: list[QueuedRecipient]) -> None:
    """Load each distinct domain, relay server and mailbox once and share the objects:
    select_related would build (and decrypt the DKIM key, relay credentials and mailbox
    password of) one copy per row, thousands per batch for the same few senders."""
    messages = [r.message for r in rows]
    domains = Domain.objects.in_bulk({m.domain_id for m in messages if m.domain_id})
    relays = RelayServer.objects.in_bulk({m.relay_server_id for m in messages if m.relay_server_id})
    mailboxes = Mailbox.objects.in_bulk({m.mailbox_id for m in messages if m.mailbox_id})
    for m in messages:
        m.domain = domains.get(m.domain_id) if m.domain_id else None
        m.relay_server = relays.get(m.relay_server_id) if m.relay_server_id else None
        m.mailbox = mailboxes.get(m.mailbox_id) if m.mailbox_id else None
