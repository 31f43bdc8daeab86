"""The runner's database side: claim due deliveries under a lease, record attempts.

A claim takes, per endpoint, at most its `max_concurrency` minus what is in flight
(every worker's leases count: the endpoint rows are locked while counting), and only the
first pending delivery of each message per endpoint: a message's later event waits until
its earlier one is delivered or given up (order per message). A worker that dies leaves
its leases to run out; the deliveries are claimed again and sent with the same
webhook-id, which is the one duplicate Standard Webhooks lets a receiver drop.
"""

from __future__ import annotations

import email.utils
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from mailplane.cells.routing import data_atomic
from mailplane.webhooks.config import conf, retry_schedule
from mailplane.webhooks.models import (
    DeliveryState,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from mailplane.webhooks.services import endpoint_disable, endpoint_secrets

log = logging.getLogger("mailplane.webhooks")


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: int
    webhook_id: str
    endpoint_id: int
    url: str
    body: str
    secrets: list[str]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    delivery_id: int
    endpoint_id: int
    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str = ""
    excerpt: str = ""
    retry_after: str | None = None  # the header, on 429 and 503

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _due(now: datetime) -> Q:
    return Q(state=DeliveryState.PENDING, next_attempt_at__lte=now, endpoint__enabled=True) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def _leases(now: datetime) -> QuerySet[WebhookDelivery]:
    """Deliveries claimed and not yet recorded: what is in flight (the `webhook_leased`
    partial index holds just these rows, however long the backlog)."""
    return WebhookDelivery.objects.filter(
        state=DeliveryState.PENDING, claimed_until__isnull=False, claimed_until__gte=now
    )


def deliveries_claim(*, worker_id: str, now: datetime, limit: int, lease: float) -> list[Claimed]:
    earlier = WebhookDelivery.objects.filter(
        endpoint=OuterRef("endpoint"),
        message=OuterRef("message"),
        state=DeliveryState.PENDING,
        event_seq__lt=OuterRef("event_seq"),
    )
    until = now + timedelta(seconds=lease)
    # No savepoint when inside the runner's round (runner.py _record_and_claim): an error
    # rolls the whole round back anyway, and a savepoint is two more round trips.
    with data_atomic(savepoint=False):
        # Endpoints at their cap are left out before choosing, so that one endpoint's
        # backlog cannot fill every claim while the others wait.
        full = [
            pk
            for pk, n, cap in _leases(now)
            .values("endpoint_id")
            .annotate(n=Count("id"))
            .values_list("endpoint_id", "n", "endpoint__max_concurrency")
            if n >= cap
        ]
        candidates = list(
            WebhookDelivery.objects.filter(_due(now))
            .exclude(endpoint_id__in=full)
            .filter(Q(message__isnull=True) | ~Exists(earlier))
            .order_by("next_attempt_at", "id")
            .values_list("pk", "endpoint_id")[: limit * 4]
        )
        if not candidates:
            return []
        # The endpoint rows, locked, serialise the claims for each endpoint across workers,
        # so that the leases counted next are all there are. PostgreSQL: an endpoint another
        # worker is claiming for right now is skipped (that claim fills it), not waited for.
        endpoints = {
            e.pk: e
            for e in WebhookEndpoint.objects.select_for_update(skip_locked=True)
            .filter(pk__in={e for _, e in candidates}, enabled=True)
            .order_by("pk")
        }
        if not endpoints:
            return []
        in_flight = dict(
            _leases(now)
            .filter(endpoint_id__in=endpoints)
            .values("endpoint_id")
            .annotate(n=Count("id"))
            .values_list("endpoint_id", "n")
        )
        room = {pk: e.max_concurrency - in_flight.get(pk, 0) for pk, e in endpoints.items()}
        chosen: list[int] = []
        for pk, endpoint_id in candidates:
            if len(chosen) >= limit:
                break
            if room.get(endpoint_id, 0) > 0:
                room[endpoint_id] -= 1
                chosen.append(pk)
        if not chosen:
            return []
        # `_due` again: a row another worker leased since the candidates were read is
        # not updated (PostgreSQL re-checks the condition on the row it waited for).
        WebhookDelivery.objects.filter(_due(now), pk__in=chosen).update(
            claimed_by=worker_id, claimed_until=until
        )
        rows = list(
            WebhookDelivery.objects.filter(pk__in=chosen, claimed_by=worker_id, claimed_until=until)
            .order_by("next_attempt_at", "id")
            .values_list("pk", "webhook_id", "endpoint_id", "body")
        )
    secrets = {pk: endpoint_secrets(e, now=now) for pk, e in endpoints.items()}
    return [
        Claimed(pk, wid, eid, endpoints[eid].url, body, secrets[eid]) for pk, wid, eid, body in rows
    ]


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _next_delay(result: AttemptResult, attempts: int, *, now: datetime) -> float | None:
    """Seconds until the next attempt, None once the schedule has run out."""
    schedule = retry_schedule()
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1]
    if result.status_code in (429, 503):
        asked = retry_after_seconds(result.retry_after, now=now)
        if asked is not None:
            delay = min(asked, float(conf("WEBHOOKS_RETRY_AFTER_MAX")))
    return delay


_RETRY_FIELDS = [
    "attempts",
    "claimed_by",
    "claimed_until",
    "state",
    "finished_at",
    "next_attempt_at",
]


def attempts_record(results: list[AttemptResult], *, worker_id: str, now: datetime) -> None:
    """Every attempt is kept; the delivery moves only if this worker still holds it (one
    whose lease ran out lost it to another, whose record wins)."""
    if not results:
        return
    disable: dict[int, str] = {}
    with data_atomic(savepoint=False):  # as deliveries_claim
        WebhookAttempt.objects.bulk_create(
            [
                WebhookAttempt(
                    delivery_id=r.delivery_id,
                    endpoint_id=r.endpoint_id,
                    started_at=r.started_at,
                    status_code=r.status_code,
                    latency_ms=r.latency_ms,
                    error=r.error[:500],
                    response_excerpt=r.excerpt,
                )
                for r in results
            ]
        )
        held = {
            d.pk: d
            for d in WebhookDelivery.objects.filter(
                pk__in=[r.delivery_id for r in results], claimed_by=worker_id
            ).only("id", *_RETRY_FIELDS)  # not the body
        }
        succeeded: set[int] = set()
        failed: set[int] = set()
        delivered: list[int] = []
        retried: list[WebhookDelivery] = []
        for r in results:
            delivery = held.get(r.delivery_id)
            if r.ok:
                succeeded.add(r.endpoint_id)
            else:
                failed.add(r.endpoint_id)
            if delivery is None:
                log.warning("lost claim on webhook delivery %s", r.delivery_id)
                continue
            if r.ok:
                delivered.append(delivery.pk)
                continue
            delivery.attempts += 1
            delivery.claimed_by, delivery.claimed_until = "", None
            if r.status_code == 410:  # Standard Webhooks: Gone disables the endpoint
                disable[r.endpoint_id] = "the endpoint answered 410 Gone"
                delay = None
            else:
                delay = _next_delay(r, delivery.attempts, now=now)
            if delay is None:
                delivery.state, delivery.finished_at = DeliveryState.FAILED, now
            else:
                delivery.next_attempt_at = now + timedelta(seconds=delay)
            retried.append(delivery)
        if retried:
            WebhookDelivery.objects.bulk_update(retried, _RETRY_FIELDS, batch_size=500)
        if delivered:
            for pk in delivered:
                held[pk].attempts += 1
            for attempts, ids in _by_attempts(held, delivered).items():
                WebhookDelivery.objects.filter(pk__in=ids).update(
                    state=DeliveryState.DELIVERED,
                    attempts=attempts,
                    finished_at=now,
                    claimed_by="",
                    claimed_until=None,
                )
        if succeeded:
            WebhookEndpoint.objects.filter(pk__in=succeeded, failing_since__isnull=False).update(
                failing_since=None
            )
        still_failing = failed - succeeded
        if still_failing:
            WebhookEndpoint.objects.filter(pk__in=still_failing, failing_since__isnull=True).update(
                failing_since=now
            )
            limit = now - timedelta(seconds=float(conf("WEBHOOKS_DISABLE_AFTER")))
            for pk in WebhookEndpoint.objects.filter(
                pk__in=still_failing, enabled=True, failing_since__lte=limit
            ).values_list("pk", flat=True):
                disable.setdefault(pk, "every attempt has failed for too long")
    for endpoint_id, reason in disable.items():
        if endpoint_disable(endpoint_id=endpoint_id, reason=reason, now=now):
            log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)


def _by_attempts(held: dict[int, WebhookDelivery], ids: list[int]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = defaultdict(list)
    for pk in ids:
        grouped[held[pk].attempts].append(pk)
    return grouped
