"""/api/messages/: outbound messages with their recipients; a message's delivery events.

Read-only, scoped to the caller's organization (another tenant's id is a 404). A list
entry carries each recipient's status, attempts and last reply (what a list is read for);
the event history, which grows with every retry, is in the detail only, as Postmark's and
Postal's message APIs do.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import optional_int_param
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.queue.models import (
    DeliveryEvent,
    EventType,
    MessageSource,
    OutboundMessage,
    RecipientStatus,
)
from mailplane.queue.selectors import message_get, message_list
from mailplane.queue.waiting import REASONS, message_waiting


class RecipientSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    email = serializers.CharField()
    status = serializers.ChoiceField(choices=RecipientStatus.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(help_text="When a deferred delivery gives up.")
    last_reply = serializers.CharField(allow_blank=True, help_text="The last remote reply.")


class EventSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    type = serializers.ChoiceField(choices=EventType.choices)
    recipient = serializers.IntegerField(allow_null=True, help_text="Recipient id.")
    remote_reply = serializers.CharField(allow_blank=True)
    remote_host = serializers.CharField(allow_blank=True)
    detail = serializers.CharField(allow_blank=True)
    bounce_class = serializers.CharField(
        allow_blank=True,
        help_text="Deferrals and bounces: hard (suppressed), soft, mailbox_full, rate_limit, "
        'block, spam or policy; "" for other events.',
    )
    created_at = serializers.DateTimeField()


class MessageSerializer(serializers.Serializer[Any]):
    """A list entry (`message_representation(events=False)`)."""

    id = serializers.IntegerField()
    mailbox = serializers.IntegerField(allow_null=True)
    relay_server = serializers.IntegerField(allow_null=True)
    domain = serializers.IntegerField(allow_null=True)
    # The metaclass pops declared fields, so this does not shadow Field.source at run time.
    source = serializers.ChoiceField(choices=MessageSource.choices)  # type: ignore[assignment]
    mail_from = serializers.CharField(allow_blank=True, help_text='Envelope sender; "" = null.')
    message_id = serializers.CharField(allow_blank=True)
    subject = serializers.CharField(allow_blank=True)
    size = serializers.IntegerField(help_text="Bytes.")
    created_at = serializers.DateTimeField()
    recipients = RecipientSerializer(many=True)


# Inline, not a component: OpenAPI 3.0's `nullable` next to an `allOf` reference (what a
# nested serializer with allow_null becomes) does not make the referenced object nullable.
WAITING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "description": "Why it still waits, and until when (queue/waiting.py); null: not waiting.",
    "properties": {
        "reason": {"type": "string", "enum": REASONS},
        "until": {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "When it may go; null: when someone acts (release, resume).",
        },
        "detail": {
            "type": "string",
            "description": "The pause's reason, or the reply that held or deferred it.",
        },
    },
    "required": ["reason", "until", "detail"],
}


@extend_schema_field(WAITING_SCHEMA)
class WaitingField(serializers.JSONField):
    """{reason, until, detail} or null."""


class RecipientDetailSerializer(RecipientSerializer):
    waiting = WaitingField(allow_null=True)


class MessageDetailSerializer(MessageSerializer):
    """The detail: the list entry plus every delivery event, oldest first, and why each
    recipient still waits."""

    recipients = RecipientDetailSerializer(many=True)
    waiting = WaitingField(allow_null=True, help_text="The first waiting recipient's.")
    events = EventSerializer(many=True)


def _event(event: DeliveryEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "type": event.type,
        "recipient": event.recipient_id,
        "remote_reply": event.remote_reply,
        "remote_host": event.remote_host,
        "detail": event.detail,
        "bounce_class": event.bounce_class,
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
        waiting = message_waiting(message_id=message.pk, now=timezone.now())
        for recipient in body["recipients"]:
            recipient["waiting"] = waiting.get(recipient["id"])
        body["waiting"] = waiting[min(waiting)] if waiting else None
        body["events"] = [_event(e) for e in message.events.all()]
    return body


class MessageListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(
        parameters=[OpenApiParameter("mailbox", int, description="Only this mailbox's.")],
        responses=MessageSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        qs = message_list(
            organization=organization_of(request), mailbox=optional_int_param(request, "mailbox")
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        return paginator.get_paginated_response(
            [message_representation(m, events=False) for m in page]
        )


class MessageDetailView(APIView):
    @extend_schema(responses=MessageDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        message = message_get(organization=organization_of(request), message_id=pk)
        return Response(message_representation(message, events=True))
