"""A server's queue, seen into and acted on (queue/waiting.py, queue/services.py).

Two doors, as for stats and webhooks: an account key under /api/servers/{id}/queue/…, and
a server's `full` key under /api/server/queue/… (send-only keys: 403; they send and read
their own messages, nothing more). Another account's server is not found.

GET …/queue/ lists the server's waiting recipients, in the order delivery takes them,
each with `waiting_reason` and `until` (null: until someone acts). POST …/queue/release/,
…/retry/ and …/cancel/ take the same filter as a JSON object and act on at most
BULK_MAX recipients per call, answering with counts and `more` (call again to go on).
A bulk action needs a filter, or `"all": true`: a body that names nothing by mistake (a
misspelt field is a 400, never ignored) does not cancel a whole queue.

Every filter is checked before any query: a reason or stream that is not one, a recipient
or domain that could not be an address, an id out of range, a date that is not one: 400
naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import INVALID, NOT_FOUND, error
from mailplane.api.server_auth import (
    AccountServerDoor,
    KeyServerDoor,
    ServerDoor,
)
from mailplane.api.server_messages import FilterSchema
from mailplane.api.servers import (
    EmailServerSerializer,
    ServerKeySerializer,
    server_representation,
)
from mailplane.api.stats import WhenField
from mailplane.core.errors import ValidationFailed
from mailplane.core.ids import MAX_ID
from mailplane.queue.models import QueuedRecipient
from mailplane.queue.services import BULK_MAX, queue_action
from mailplane.queue.waiting import REASONS, QueueFilter, server_queue
from mailplane.reputation.pause import server_key_resume, server_resume

_STREAM = re.compile(r"[-a-zA-Z0-9_]+")  # a stream id is a slug (servers/models.py)
# A domain as the queue stores it: LDH labels (RFC 1035 §2.3.1; IDNs in A-label form).
_DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}", re.I)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@extend_schema_field(OpenApiTypes.STR)
class _When(WhenField):
    """An ISO 8601 date or date-time (api/stats.py), in a JSON body too."""


class QueueQuery(serializers.Serializer[Any]):
    reason = serializers.ChoiceField(choices=REASONS, required=False)
    stream = BoundedCharField(max_length=50, required=False)
    recipient = BoundedCharField(max_length=320, required=False)
    recipient_domain = BoundedCharField(max_length=253, required=False)
    server_key = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"] = _When(required=False, help_text="Messages created from then.")
        fields["to"] = _When(required=False, help_text="Created before then.")
        return fields

    def validate_stream(self, value: str) -> str:
        if not _STREAM.fullmatch(value):
            raise serializers.ValidationError("not a stream id (letters, digits, - and _)")
        return value

    def validate_recipient(self, value: str) -> str:
        local, at, domain = value.rpartition("@")
        if not at or not local or _CONTROL.search(value) or not _DOMAIN.fullmatch(domain):
            raise serializers.ValidationError("not an email address")
        return value

    def validate_recipient_domain(self, value: str) -> str:
        if not _DOMAIN.fullmatch(value):
            raise serializers.ValidationError("not a domain name")
        return value.lower()


class QueueActionBody(QueueQuery):
    all = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Act on every waiting recipient of the server the action applies to "
        "(required when no filter is given).",
    )


def queue_filter_of(found: dict[str, Any]) -> QueueFilter:
    return QueueFilter(
        reason=found.get("reason"),
        stream=found.get("stream"),
        recipient=found.get("recipient"),
        recipient_domain=found.get("recipient_domain"),
        server_key=found.get("server_key"),
        created_from=found.get("from"),
        created_to=found.get("to"),
    )


def _query(request: Request) -> QueueFilter:
    data: dict[str, str] = {}
    known = set(QueueQuery().get_fields()) | {"limit", "offset"}
    for name in request.query_params:
        if name not in known:
            raise ValidationFailed.on(name, "not a filter of the queue")
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise ValidationFailed.on(name, "give this parameter once")
        if values[0] != "" and name not in ("limit", "offset"):
            data[name] = values[0]
    checked = QueueQuery(data=data)
    checked.is_valid(raise_exception=True)
    return queue_filter_of(dict(checked.validated_data))


def _body(request: Request) -> QueueFilter:
    data = request.data
    if not isinstance(data, dict):
        raise ValidationFailed.on("body", "must be a JSON object")
    known = set(QueueActionBody().get_fields())
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValidationFailed.on(unknown[0][:50], "not a filter of the queue")
    checked = QueueActionBody(data=data)
    checked.is_valid(raise_exception=True)
    found = dict(checked.validated_data)
    where = queue_filter_of(found)
    if not where.narrows() and not found["all"]:
        raise ValidationFailed.on("all", 'give a filter, or "all": true to act on the whole queue')
    return where


class QueueEntrySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(help_text="The recipient's id.")
    message = serializers.IntegerField(help_text="Its message's id.")
    recipient = serializers.CharField()
    stream = serializers.CharField()
    server_key = serializers.IntegerField(allow_null=True)
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    waiting_reason = serializers.ChoiceField(choices=REASONS)
    until = serializers.DateTimeField(
        allow_null=True, help_text="When it may go (null: when an operator acts)."
    )
    detail = serializers.CharField(
        allow_blank=True, help_text="The pause's reason, or the reply that held or deferred it."
    )
    created_at = serializers.DateTimeField()


def _entry(row: QueuedRecipient) -> dict[str, Any]:
    link = row.message.server_link
    return {
        "id": row.pk,
        "message": row.message_id,
        "recipient": row.rcpt_to,
        "stream": link.stream.stream_id,
        "server_key": link.server_key_id,
        "status": row.status,
        "attempts": row.attempts,
        "waiting_reason": row.waiting_reason,  # type: ignore[attr-defined]
        "until": row.waiting_until,  # type: ignore[attr-defined]
        "detail": row.waiting_detail,  # type: ignore[attr-defined]
        "created_at": row.message.created_at,
    }


class QueueActionSerializer(serializers.Serializer[Any]):
    action = serializers.ChoiceField(choices=["release", "retry", "cancel"])
    changed = serializers.IntegerField(help_text="Recipients the action moved.")
    skipped = serializers.IntegerField(
        help_text="Matched, but sent, claimed by a worker or changed meanwhile."
    )
    more = serializers.BooleanField(
        help_text=f"More match than one call takes ({BULK_MAX}): call again."
    )


QUERY_PARAMETERS = [
    OpenApiParameter("reason", OpenApiTypes.STR, enum=REASONS, description="Only this reason."),
    OpenApiParameter("stream", OpenApiTypes.STR, description="Only this stream id."),
    OpenApiParameter("recipient", OpenApiTypes.STR, description="Only to this address."),
    OpenApiParameter("recipient_domain", OpenApiTypes.STR, description="Only to this domain."),
    OpenApiParameter("server_key", OpenApiTypes.INT, description="Only sent with this key."),
    OpenApiParameter("from", OpenApiTypes.STR, description="Messages created from (ISO 8601)."),
    OpenApiParameter("to", OpenApiTypes.STR, description="Created before (ISO 8601)."),
]
SEND_ONLY = error("A send-only server key.")


def _actor(request: Request) -> str:
    key = request.auth
    prefix = getattr(key, "prefix", "")
    return f"API key {prefix}…" if prefix else "API"


class _Scoped(ServerDoor):
    schema = FilterSchema()
    pagination_class = LimitOffsetPagination

    def listing(self, request: Request, pk: int | None) -> Response:
        server = self.server(request, pk)
        rows = server_queue(server_id=server.pk, where=_query(request), now=timezone.now())
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(rows, request, view=self) or []
        return paginator.get_paginated_response([_entry(r) for r in page])

    def act(self, request: Request, pk: int | None, action: str) -> Response:
        server = self.server(request, pk)
        where = _body(request)
        done = queue_action(
            action=action,
            server_id=server.pk,
            where=where,
            now=timezone.now(),
            actor=_actor(request),
        )
        return Response(
            {
                "action": done.action,
                "changed": done.changed,
                "skipped": done.skipped,
                "more": done.more,
            }
        )


class _AccountScope(AccountServerDoor, _Scoped):
    pass


class _ServerScope(KeyServerDoor, _Scoped):
    pass


_ACTION_HELP = {
    "release": "Held recipients (content filter, volume cap, pause) are sent now, past "
    "the cap and pause holds once (warm-up caps still apply).",
    "retry": "Deferred recipients (backoff, rate-limit replies, warm-up, empty pool) are "
    "tried again now.",
    "cancel": "Waiting recipients are cancelled: never sent, a `cancelled` event each.",
}


def _account_action(action: str) -> type[APIView]:
    class View(_AccountScope):
        @extend_schema(
            operation_id=f"server_queue_{action}",
            description=_ACTION_HELP[action],
            request=QueueActionBody,
            responses={200: QueueActionSerializer, 400: INVALID, 404: NOT_FOUND},
        )
        def post(self, request: Request, pk: int) -> Response:
            return self.act(request, pk, action)

    View.__name__ = View.__qualname__ = f"ServerQueue{action.capitalize()}View"
    return View


def _self_action(action: str) -> type[APIView]:
    class View(_ServerScope):
        @extend_schema(
            operation_id=f"server_self_queue_{action}",
            description=_ACTION_HELP[action],
            request=QueueActionBody,
            responses={200: QueueActionSerializer, 400: INVALID, 403: SEND_ONLY},
        )
        def post(self, request: Request) -> Response:
            return self.act(request, None, action)

    View.__name__ = View.__qualname__ = f"SelfQueue{action.capitalize()}View"
    return View


class ServerQueueView(_AccountScope):
    @extend_schema(
        operation_id="server_queue_list",
        parameters=QUERY_PARAMETERS,
        responses=QueueEntrySerializer(many=True),
    )
    def get(self, request: Request, pk: int) -> Response:
        return self.listing(request, pk)


class SelfQueueView(_ServerScope):
    @extend_schema(
        operation_id="server_self_queue_list",
        parameters=QUERY_PARAMETERS,
        responses={200: QueueEntrySerializer(many=True), 403: SEND_ONLY},
    )
    def get(self, request: Request) -> Response:
        return self.listing(request, None)


ServerQueueReleaseView = _account_action("release")
ServerQueueRetryView = _account_action("retry")
ServerQueueCancelView = _account_action("cancel")
SelfQueueReleaseView = _self_action("release")
SelfQueueRetryView = _self_action("retry")
SelfQueueCancelView = _self_action("cancel")


# --- resuming a paused server or key (reputation/pause.py) ----------------------------

RESUME_REFUSED = error("This install leaves resuming to its operator (the CLI).")


class ServerResumeView(APIView):
    @extend_schema(
        operation_id="server_resume",
        request=None,
        responses={200: EmailServerSerializer, 403: RESUME_REFUSED, 404: NOT_FOUND},
        description="Resume a paused server: sends accepted again, judged afresh from now.",
    )
    def post(self, request: Request, pk: int) -> Response:
        server = server_resume(
            server_id=pk, now=timezone.now(), organization=organization_of(request)
        )
        return Response(server_representation(server))


class ServerKeyResumeView(APIView):
    @extend_schema(
        operation_id="server_key_resume",
        request=None,
        responses={200: ServerKeySerializer, 403: RESUME_REFUSED, 404: NOT_FOUND},
        description="Resume a paused server key, as a server.",
    )
    def post(self, request: Request, pk: int) -> Response:
        key = server_key_resume(
            key_id=pk, now=timezone.now(), organization=organization_of(request)
        )
        return Response(ServerKeySerializer(key).data)
