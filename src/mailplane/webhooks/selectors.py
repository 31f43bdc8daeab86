"""Reads for webhook endpoints, scoped to one server or one account (another's ids are
not found)."""

from __future__ import annotations

from django.db.models import QuerySet

from mailplane.core.errors import NotFound
from mailplane.servers.models import EmailServer
from mailplane.tenancy.models import Organization
from mailplane.webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookNotice


def webhook_endpoint_list(*, server: EmailServer) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(server=server).order_by("id")


def webhook_endpoint_get(
    *,
    endpoint_id: int,
    server: EmailServer | None = None,
    organization: Organization | None = None,
) -> WebhookEndpoint:
    """One endpoint of the server (a server key) or of the account (an account key)."""
    qs = WebhookEndpoint.objects.filter(pk=endpoint_id).select_related("server")
    if server is not None:
        qs = qs.filter(server=server)
    elif organization is not None:
        qs = qs.filter(server__organization=organization)
    else:
        raise ValueError("scope by a server or an organization")
    found = qs.first()
    if found is None:
        raise NotFound("webhook endpoint not found")
    return found


def webhook_attempt_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookAttempt]:
    """Newest first, with the delivery's id, type and state."""
    return (
        WebhookAttempt.objects.filter(endpoint=endpoint).select_related("delivery").order_by("-id")
    )


def webhook_notice_list(*, organization: Organization) -> QuerySet[WebhookNotice]:
    return WebhookNotice.objects.filter(organization=organization).order_by("-id")
