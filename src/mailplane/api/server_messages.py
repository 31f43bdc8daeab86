"""/api/server/messages/: a server key reads its server's messages (Postmark: GET
/messages/outbound with a server token). Any server key, send-only included: seed 004's
send-only key sends "and reads its own messages" (issue 11). Another server's message,
even of the same account, is not found.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.messages import (
    MessageDetailSerializer,
    MessageSerializer,
    message_representation,
)
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import AutoSchema, error
from mailplane.api.server_auth import HasServerKey, ServerKeyAuthentication, server_of
from mailplane.core.errors import ValidationFailed
from mailplane.queue.models import OutboundMessage, RecipientStatus
from mailplane.sending.schedule import server_message_update
from mailplane.servers.selectors import server_message_get, server_message_list


class RescheduleSerializer(serializers.Serializer[Any]):
    send_at = serializers.CharField(
        help_text="The new send time: RFC 3339 with an offset, at most 72 hours ahead.",
    )


# Inline, not a component, as messages.WAITING_SCHEMA: OpenAPI 3.0's `nullable` next to
# an `allOf` reference does not make the referenced object nullable.
CONTENT_VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "description": "Why the server's content filter held it (`content_filter: hold`); null "
    "when it did not.",
    "properties": {
        "score": {"type": "number", "description": "The sum of the symbols' scores."},
        "symbols": {
            "type": "array",
            "description": "Highest score first.",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "score": {"type": "number"},
                    "description": {"type": "string"},
                },
                "required": ["name", "score", "description"],
            },
        },
    },
    "required": ["score", "symbols"],
}


@extend_schema_field(CONTENT_VERDICT_SCHEMA)
class ContentVerdictField(serializers.JSONField):
    """{score, symbols: [{name, score, description}]} or null."""


class _ServerFields(serializers.Serializer[Any]):
    stream = serializers.CharField(help_text="The stream id it was sent on.")
    tags = serializers.ListField(child=serializers.CharField())
    metadata = serializers.DictField(child=serializers.CharField())
    sandbox = serializers.BooleanField(help_text="Sent on a sandbox server: never delivered.")
    content_verdict = ContentVerdictField(allow_null=True)


class ServerMessageSerializer(MessageSerializer, _ServerFields):
    """A list entry: the account's message fields plus the server's."""


class ServerMessageDetailSerializer(MessageDetailSerializer, _ServerFields):
    """The detail: plus every delivery event, oldest first."""


FILTERS = {
    # name: (max length, description)
    "recipient": (320, "Only messages to this address (exact, any case)."),
    "status": (20, "Only messages with a recipient in this status."),
    "tag": (100, "Only messages with this tag."),
    "stream": (50, "Only messages of this stream id."),
    "metadata_key": (100, "Only messages whose metadata has this key."),
    "metadata_value": (1000, "With `metadata_key`: only where that key has this value."),
}
DATES = {
    "from": "Only messages created at or after this time (ISO 8601 date or date-time; "
    "a date-time without offset is UTC).",
    "to": "Only messages created before this time (same form).",
}


def datetime_param(request: Request, name: str) -> datetime | None:
    """`?from=2026-12-01` or `?from=2026-12-01T10:00:00Z` as an aware date-time."""
    text = text_param(request, name, 40)
    if text is None:
        return None
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            if day is not None:
                moment = datetime.combine(day, time.min)
    except ValueError:
        moment = None  # well formed, impossible (2026-02-30, hour 25)
    if moment is None:
        raise ValidationFailed.on(name, "must be an ISO 8601 date or date-time")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    return moment


def text_param(request: Request, name: str, max_length: int) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationFailed.on(name, "give this parameter once")
    if not values or values[0] == "":
        return None
    if len(values[0]) > max_length:
        raise ValidationFailed.on(name, f"must be at most {max_length} characters")
    return values[0]


class FilterSchema(AutoSchema):
    """Every query parameter here takes "" as absent (`text_param`, api/fields.py), and
    the schema says so: `allowEmptyValue` (OpenAPI 3.0.3 §4.7.12)."""

    def get_operation(self, *args: Any, **kwargs: Any) -> Any:
        operation = super().get_operation(*args, **kwargs)
        for parameter in (operation or {}).get("parameters", []):
            if parameter.get("in") == "query":
                parameter["allowEmptyValue"] = True
        return operation


def _representation(message: OutboundMessage, *, events: bool) -> dict[str, Any]:
    link = message.server_link
    return {
        **message_representation(message, events=events),
        "stream": link.stream.stream_id,
        "tags": link.tags,
        "metadata": link.metadata,
        "sandbox": link.sandbox,
        "content_verdict": link.content_verdict,
    }


def message_detail(message: OutboundMessage) -> dict[str, Any]:
    """A message with its events, as GET /api/server/messages/{id}/ shows it."""
    return _representation(message, events=True)


class ServerMessageListView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [HasServerKey]
    pagination_class = LimitOffsetPagination
    schema = FilterSchema()

    @extend_schema(
        operation_id="server_messages_list",
        parameters=[
            OpenApiParameter(
                name,
                str,
                description=text,
                enum=RecipientStatus.values if name == "status" else None,
            )
            for name, (_, text) in FILTERS.items()
        ]
        + [OpenApiParameter(name, str, description=text) for name, text in DATES.items()],
        responses=ServerMessageSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        found = {name: text_param(request, name, size) for name, (size, _) in FILTERS.items()}
        if found["status"] is not None and found["status"] not in RecipientStatus.values:
            raise ValidationFailed.on(
                "status", f"must be one of {', '.join(RecipientStatus.values)}"
            )
        if found["metadata_value"] is not None and found["metadata_key"] is None:
            raise ValidationFailed.on("metadata_value", "needs metadata_key")
        since, until = datetime_param(request, "from"), datetime_param(request, "to")
        if since is not None and until is not None and until <= since:
            raise ValidationFailed.on("to", "must be after from")
        qs = server_message_list(
            server=server_of(request),
            recipient=found["recipient"],
            status=found["status"],
            tag=found["tag"],
            stream=found["stream"],
            metadata_key=found["metadata_key"],
            metadata_value=found["metadata_value"],
            since=since,
            until=until,
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        return paginator.get_paginated_response([_representation(m, events=False) for m in page])


class ServerMessageDetailView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [HasServerKey]

    @extend_schema(operation_id="server_messages_retrieve", responses=ServerMessageDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        message = server_message_get(server=server_of(request), message_id=pk)
        return Response(_representation(message, events=True))

    @extend_schema(
        operation_id="server_messages_reschedule",
        request=RescheduleSerializer,
        responses={
            200: ServerMessageDetailSerializer,
            409: error("The message is no longer scheduled (sent, being sent, cancelled)."),
            422: error("`send_at` is not an RFC 3339 time in the next 72 hours."),
        },
        description="Move a scheduled message to another `send_at` before it leaves.",
    )
    def patch(self, request: Request, pk: int) -> Response:
        # As the send API: the serializer is the schema's; sending/ reads the body (RFC 3339
        # itself, so any bad `send_at` is the send API's 422, whatever its length or type).
        fields = dict(request.data) if isinstance(request.data, dict) else {}
        message = server_message_update(server=server_of(request), message_id=pk, fields=fields)
        return Response(_representation(message, events=True))
