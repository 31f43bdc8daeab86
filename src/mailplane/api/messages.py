"""/api/messages/: outbound messages with their recipients and delivery events.

Read-only, scoped to the caller's organization (another tenant's id is a 404).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import optional_int_param
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.core.errors import NotFound
from mailplane.queue.models import DeliveryEvent, OutboundMessage
from mailplane.tenancy.models import Organization


def message_list(*, organization: Organization, mailbox: int | None) -> QuerySet[OutboundMessage]:
    qs = OutboundMessage.objects.filter(organization=organization).order_by("-id")
    if mailbox is not None:
        qs = qs.filter(mailbox_id=mailbox)
    return qs.prefetch_related("recipients")


def message_get(*, organization: Organization, message_id: int) -> OutboundMessage:
    message = (
        OutboundMessage.objects.filter(organization=organization, pk=message_id)
        .prefetch_related("recipients", "events")
        .first()
    )
    if message is None:
        raise NotFound("message not found")
    return message


def _event(event: DeliveryEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "type": event.type,
        "recipient": event.recipient_id,
        "remote_reply": event.remote_reply,
        "remote_host": event.remote_host,
        "detail": event.detail,
        "created_at": event.created_at,
    }


def message_representation(message: OutboundMessage, *, events: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": message.pk,
        "mailbox": message.mailbox_id,
        "relay_server": message.relay_server_id,
        "domain": message.domain_id,
        "source": message.source,
        "mail_from": message.mail_from,
        "message_id": message.message_id,
        "subject": message.subject,
        "size": message.size,
        "created_at": message.created_at,
        "recipients": [
            {
                "id": r.pk,
                "email": r.rcpt_to,
                "status": r.status,
                "attempts": r.attempts,
                "next_attempt_at": r.next_attempt_at,
                "expires_at": r.expires_at,
                "last_reply": r.last_reply,
            }
            for r in sorted(message.recipients.all(), key=lambda r: r.pk)
        ],
    }
    if events:
        body["events"] = [_event(e) for e in message.events.all()]
    return body


class MessageListView(APIView):
    def get(self, request: Request) -> Response:
        qs = message_list(
            organization=organization_of(request), mailbox=optional_int_param(request, "mailbox")
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        return paginator.get_paginated_response(
            [message_representation(m, events=False) for m in page]
        )


class MessageDetailView(APIView):
    def get(self, request: Request, pk: int) -> Response:
        message = message_get(organization=organization_of(request), message_id=pk)
        return Response(message_representation(message, events=True))
