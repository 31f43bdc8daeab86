"""/api/server/suppressions/: a server's suppression lists, per stream (Postmark: GET/POST
/message-streams/{stream}/suppressions with a server token). Full server keys only:
a send-only key sends and reads its messages, nothing else (seed 004).

Entries come from hard bounces and complaints (when the server's auto_suppress_bounces /
auto_suppress_complaints allow), unsubscribes, and by hand here; deleting one reactivates
the address on that stream. Only queue/transitions.py writes them.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.fields import BoundedCharField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import CONFLICT, error
from mailplane.api.server_auth import FullAccessKey, ServerKeyAuthentication, server_of
from mailplane.api.server_messages import FilterSchema, datetime_param, text_param
from mailplane.core.errors import NotFound, ValidationFailed
from mailplane.exports.writer import cell_text
from mailplane.queue.models import Suppression, SuppressionReason
from mailplane.servers.models import EmailServer, MessageStream
from mailplane.servers.selectors import stream_get, suppression_list
from mailplane.servers.services import suppression_add, suppression_remove

SEND_ONLY = error("A send-only key: suppressions need a full server key.")


class SuppressionSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    address = serializers.CharField()
    stream = serializers.CharField(help_text="The stream id it holds for.")
    reason = serializers.ChoiceField(choices=SuppressionReason.choices)
    detail = serializers.CharField(
        allow_blank=True, help_text="The remote reply that caused it, or the note given."
    )
    message = serializers.IntegerField(
        allow_null=True, help_text="The message whose bounce or complaint caused it."
    )
    created_at = serializers.DateTimeField()


class SuppressionCreateSerializer(serializers.Serializer[Any]):
    address = BoundedCharField(max_length=320)
    stream = BoundedCharField(
        max_length=50, required=False, help_text="A stream id (default: the server's default)."
    )
    detail = BoundedCharField(max_length=500, required=False, default="", allow_blank=True)


def _representation(entry: Suppression) -> dict[str, Any]:
    return {
        "id": entry.pk,
        "address": entry.address,
        "stream": entry.stream.stream_id if entry.stream else "",
        "reason": entry.reason,
        "detail": entry.detail,
        "message": entry.message_id,
        "created_at": entry.created_at,
    }


def _stream(server: EmailServer, stream_id: str) -> MessageStream:
    try:
        return stream_get(server=server, stream_id=stream_id)
    except NotFound as exc:  # a parameter or body field, not the path: 400 naming it
        raise ValidationFailed.on("stream", f"no stream {stream_id!r} on this server") from exc


FILTERS = {
    "stream": (50, "Only this stream's list (a stream id)."),
    "address": (320, "Only this address (any case)."),
    "reason": (20, "Only entries of this reason."),
}


def _filtered(request: Request) -> QuerySet[Suppression]:
    server = server_of(request)
    found = {name: text_param(request, name, size) for name, (size, _) in FILTERS.items()}
    if found["reason"] is not None and found["reason"] not in SuppressionReason.values:
        raise ValidationFailed.on("reason", f"must be one of {', '.join(SuppressionReason.values)}")
    stream = _stream(server, found["stream"]) if found["stream"] else None
    return suppression_list(
        server=server,
        stream=stream,
        address=found["address"],
        reason=found["reason"],
        since=datetime_param(request, "from"),
        until=datetime_param(request, "to"),
    )


_PARAMETERS = [
    *(
        OpenApiParameter(
            name, str, description=text, enum=SuppressionReason.values if name == "reason" else None
        )
        for name, (_, text) in FILTERS.items()
    ),
    OpenApiParameter("from", str, description="Added at or after (ISO 8601)."),
    OpenApiParameter("to", str, description="Added before (ISO 8601)."),
]


class SuppressionListView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]
    pagination_class = LimitOffsetPagination
    schema = FilterSchema()

    @extend_schema(
        operation_id="server_suppressions_list",
        parameters=_PARAMETERS,
        responses={200: SuppressionSerializer(many=True), 403: SEND_ONLY},
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(_filtered(request), request, view=self) or []
        return paginator.get_paginated_response([_representation(s) for s in page])

    @extend_schema(
        operation_id="server_suppressions_create",
        request=SuppressionCreateSerializer,
        responses={201: SuppressionSerializer, 403: SEND_ONLY, 409: CONFLICT},
        description="Suppress an address on a stream by hand (reason `manual`). An address "
        "on that stream's list already is a 409 (its entry keeps its first reason).",
    )
    def post(self, request: Request) -> Response:
        server = server_of(request)
        serializer = SuppressionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        stream_id = data.get("stream") or (
            server.default_stream.stream_id if server.default_stream else ""
        )
        stream = _stream(server, stream_id)
        entry = suppression_add(
            server=server, stream=stream, address=data["address"], detail=data["detail"]
        )
        return Response(_representation(entry), status=status.HTTP_201_CREATED)


EXPORT_MAX_ROWS = 100_000  # past it, narrow the export with the filters
EXPORT_COLUMNS = ("address", "stream", "reason", "detail", "message", "created_at")
_CSV = OpenApiResponse(
    OpenApiTypes.STR,
    description="RFC 4180 CSV, UTF-8, a header row then one row per suppression "
    "(newest first); cells starting with a formula character get a leading `'`.",
)


class SuppressionExportView(APIView):
    """The same entries as the list, as a CSV file (the suppression export users of
    Postal and useSend ask for)."""

    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]
    schema = FilterSchema()

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # A client asking for text/csv must still get JSON errors, not a 406.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="server_suppressions_export",
        parameters=_PARAMETERS,
        responses={(200, "text/csv"): _CSV, 403: SEND_ONLY},
        description=f"At most {EXPORT_MAX_ROWS:,} rows: a larger list is a 400 asking for filters.",
    )
    def get(self, request: Request) -> HttpResponse:
        entries = list(_filtered(request)[: EXPORT_MAX_ROWS + 1])
        if len(entries) > EXPORT_MAX_ROWS:
            raise ValidationFailed.on(
                "from", f"more than {EXPORT_MAX_ROWS} suppressions: narrow the export"
            )
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(EXPORT_COLUMNS)
        for entry in entries:
            row = _representation(entry)
            row["created_at"] = row["created_at"].isoformat()
            writer.writerow([cell_text(row[c]) for c in EXPORT_COLUMNS])
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response


class SuppressionDetailView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]

    @extend_schema(
        operation_id="server_suppressions_destroy", responses={204: None, 403: SEND_ONLY}
    )
    def delete(self, request: Request, pk: int) -> Response:
        suppression_remove(server=server_of(request), suppression_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
