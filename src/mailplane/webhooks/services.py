"""Writes for webhook endpoints: create (the secret shown once), change, rotate the
secret, delete, replay (keyword-only, typed; domain errors only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from mailplane.cells.routing import data_atomic
from mailplane.core import crypto
from mailplane.core.errors import LimitReached, NotFound, ValidationFailed
from mailplane.servers.models import EmailServer
from mailplane.webhooks.config import conf
from mailplane.webhooks.guard import url_check
from mailplane.webhooks.models import (
    DeliveryState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEventType,
    WebhookNotice,
)
from mailplane.webhooks.signing import secret_generate

ENDPOINTS_PER_SERVER = 20
REPLAY_MAX = 10_000  # deliveries one range replay resets at most
CONCURRENCY_MAX = 50
UPDATABLE = frozenset({"url", "description", "event_types", "enabled", "max_concurrency"})


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    endpoint: WebhookEndpoint
    secret: str  # the only time the clear secret is shown


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    if "url" in fields:
        fields["url"] = str(fields["url"]).strip()
        url_check(fields["url"])
    if "event_types" in fields:
        kinds = list(fields["event_types"])
        unknown = [k for k in kinds if k not in WebhookEventType.values]
        if unknown:
            raise ValidationFailed.on(
                "event_types",
                f"unknown event type {unknown[0]!r}; one of {', '.join(WebhookEventType.values)}",
            )
        if not kinds:
            raise ValidationFailed.on("event_types", "choose at least one event type")
        fields["event_types"] = sorted(set(kinds), key=WebhookEventType.values.index)
    concurrency = fields.get("max_concurrency")
    if concurrency is not None and not 1 <= int(concurrency) <= CONCURRENCY_MAX:
        raise ValidationFailed.on("max_concurrency", f"must be between 1 and {CONCURRENCY_MAX}")
    return fields


def webhook_endpoint_create(
    *,
    server: EmailServer,
    url: str,
    event_types: list[str],
    description: str = "",
    enabled: bool = True,
    max_concurrency: int = 5,
) -> IssuedSecret:
    fields = _clean(
        {
            "url": url,
            "event_types": event_types,
            "description": description,
            "enabled": enabled,
            "max_concurrency": max_concurrency,
        }
    )
    secret = secret_generate()
    with data_atomic():
        # Counted under the server's row lock: two creates cannot both take the last place.
        EmailServer.objects.select_for_update().filter(pk=server.pk).first()
        if WebhookEndpoint.objects.filter(server=server).count() >= ENDPOINTS_PER_SERVER:
            raise LimitReached(
                f"a server has at most {ENDPOINTS_PER_SERVER} webhook endpoints",
                details={"url": [f"at most {ENDPOINTS_PER_SERVER} endpoints per server"]},
            )
        endpoint = WebhookEndpoint.objects.create(
            server=server, secret=crypto.encrypt(secret), **fields
        )
    return IssuedSecret(endpoint, secret)


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, fields: dict[str, Any]) -> None:
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValidationFailed.on(sorted(unknown)[0], "cannot be changed")
    fields = _clean(dict(fields))
    for name, value in fields.items():
        setattr(endpoint, name, value)
    changed = list(fields)
    if fields.get("enabled") is True:  # switched back on: a fresh start
        endpoint.disabled_at, endpoint.disabled_reason, endpoint.failing_since = None, "", None
        changed += ["disabled_at", "disabled_reason", "failing_since"]
    endpoint.save(update_fields=changed)


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


def webhook_secret_rotate(
    *, endpoint: WebhookEndpoint, now: datetime | None = None
) -> IssuedSecret:
    """A new secret signs from now on; the current one signs too for the overlap (both
    signatures in the header), so receivers can switch without missing a delivery."""
    now = now or timezone.now()
    secret = secret_generate()
    with data_atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.previous_secret = locked.secret
        locked.previous_secret_expires_at = now + timedelta(
            seconds=float(conf("WEBHOOKS_ROTATION_OVERLAP"))
        )
        locked.secret = crypto.encrypt(secret)
        locked.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at"])
    return IssuedSecret(locked, secret)


def endpoint_secrets(endpoint: WebhookEndpoint, *, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one
    while its overlap lasts."""
    found = [crypto.decrypt(endpoint.secret)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and now < expires:
        found.append(crypto.decrypt(endpoint.previous_secret))
    return found


def webhook_replay(
    *,
    endpoint: WebhookEndpoint,
    delivery_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Send again one delivery, or every delivery of events in [since, until), with
    their webhook ids (a receiver that kept them drops them; one that lost them gets
    them). Each gets the whole retry schedule again. Returns how many."""
    now = now or timezone.now()
    rows = WebhookDelivery.objects.filter(endpoint=endpoint)
    if delivery_id is not None:
        if since is not None or until is not None:
            raise ValidationFailed.on("delivery", "give a delivery or a time range, not both")
        rows = rows.filter(pk=delivery_id)
        if not rows.exists():
            raise NotFound("delivery not found")
    else:
        if since is None or until is None:
            raise ValidationFailed.on("since", "give a delivery, or both since and until")
        if since >= until:
            raise ValidationFailed.on("until", "must be after since")
        rows = rows.filter(event_at__gte=since, event_at__lt=until)
    ids = list(rows.order_by("event_seq", "id").values_list("pk", flat=True)[: REPLAY_MAX + 1])
    if len(ids) > REPLAY_MAX:
        raise LimitReached(
            f"at most {REPLAY_MAX} deliveries per replay: narrow the range",
            details={"until": [f"the range holds more than {REPLAY_MAX} deliveries"]},
        )
    count = 0
    for i in range(0, len(ids), 500):
        count += WebhookDelivery.objects.filter(pk__in=ids[i : i + 500]).update(
            state=DeliveryState.PENDING, attempts=0, next_attempt_at=now, finished_at=None
        )
    return count


def endpoint_disable(*, endpoint_id: int, reason: str, now: datetime) -> bool:
    """Switch an endpoint off and tell the account (a notice it reads through the API).
    False when it was off already."""
    with data_atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id).first()
        if endpoint is None or not endpoint.enabled:
            return False
        endpoint.enabled = False
        endpoint.disabled_at = now
        endpoint.disabled_reason = reason[:500]
        endpoint.save(update_fields=["enabled", "disabled_at", "disabled_reason"])
        WebhookNotice.objects.create(
            organization_id=endpoint.server.organization_id,
            endpoint=endpoint,
            kind="endpoint_disabled",
            message=f"webhook endpoint {endpoint.url} disabled: {reason}"[:500],
        )
    return True
