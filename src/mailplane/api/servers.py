"""/api/servers/…: email servers, their streams and their keys, managed with an account key.

Postmark splits its API the same way: an account token manages servers, a server token
sends (api/send.py). Another account's server ids are not found.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import CONFLICT, LIMIT_REACHED
from mailplane.queue.models import BounceClass
from mailplane.servers.models import (
    CapMode,
    ContentFilter,
    EmailServer,
    ServerKeyKind,
    StreamKind,
)
from mailplane.servers.selectors import (
    bounce_rule_list,
    email_server_get,
    email_server_list,
    server_key_list,
)
from mailplane.servers.services import (
    CAP_MAX,
    bounce_rule_create,
    bounce_rule_delete,
    email_server_create,
    email_server_delete,
    email_server_update,
    server_key_create,
    server_key_revoke,
    server_key_update,
)

CAPS_HELP = (
    "Recipients per clock hour / day (UTC), null for none. Over it, a key in `refuse` mode "
    "gets 429 with `Retry-After` and `retry_at`; otherwise delivery holds the mail until "
    "the window allows, in order."
)


def _cap_field(window: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=CAP_MAX,
        help_text=f"{window.capitalize()} volume cap. {CAPS_HELP}",
    )


class PausedFields(serializers.Serializer[Any]):
    """What the automatic pause shows (reputation/pause.py)."""

    hourly_cap = serializers.IntegerField(allow_null=True)
    daily_cap = serializers.IntegerField(allow_null=True)
    paused_at = serializers.DateTimeField(
        allow_null=True,
        help_text="Set when the bounce or complaint rate crossed its limit: sends are "
        "refused (403 `sending_paused`) until an operator resumes it.",
    )
    paused_reason = serializers.CharField(allow_blank=True)


class StreamSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    stream_id = serializers.CharField(help_text="What a send request names in `stream`.")
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=StreamKind.choices)


class EmailServerSerializer(PausedFields):
    id = serializers.IntegerField()
    name = serializers.CharField()
    color = serializers.CharField(allow_blank=True, help_text='"#rrggbb", or "" for none.')
    default_stream = serializers.CharField(
        allow_null=True, help_text="The stream id used when a send request names none."
    )
    auto_suppress_bounces = serializers.BooleanField()
    auto_suppress_complaints = serializers.BooleanField()
    sandbox = serializers.BooleanField(
        help_text="Messages are validated and recorded as delivered, and never sent."
    )
    content_filter = serializers.ChoiceField(
        choices=ContentFilter.choices,
        help_text="MI Shield: `reject` refuses a message scoring at least `content_threshold` "
        "(422 with the reasons); `hold` accepts it held in the queue (status `held`, the "
        "reasons in the message's `content_verdict`) until released or cancelled; `off` "
        "sends whatever it scores.",
    )
    content_threshold = serializers.FloatField()
    streams = StreamSerializer(many=True)
    created_at = serializers.DateTimeField()


class EmailServerWriteSerializer(serializers.Serializer[Any]):
    name = BoundedCharField(max_length=100)
    color = BoundedCharField(max_length=7, allow_blank=True, required=False)
    default_stream = BoundedCharField(
        max_length=50, required=False, help_text="`outbound` (default) or `broadcast`."
    )
    auto_suppress_bounces = serializers.BooleanField(required=False)
    auto_suppress_complaints = serializers.BooleanField(required=False)
    sandbox = serializers.BooleanField(
        required=False,
        help_text="Default: false on plans with API sending, true (and required) on starter.",
    )
    content_filter = serializers.ChoiceField(choices=ContentFilter.choices, required=False)
    content_threshold = serializers.FloatField(
        required=False,
        min_value=0.1,
        max_value=1000,
        help_text="Score (rspamd's scale; default 10) at which the content filter acts.",
    )
    hourly_cap = _cap_field("hourly")
    daily_cap = _cap_field("daily")


def server_representation(server: EmailServer) -> dict[str, Any]:
    streams = sorted(server.streams.all(), key=lambda s: s.pk)
    default = next((s.stream_id for s in streams if s.pk == server.default_stream_id), None)
    return {
        "id": server.pk,
        "name": server.name,
        "color": server.color,
        "default_stream": default,
        "auto_suppress_bounces": server.auto_suppress_bounces,
        "auto_suppress_complaints": server.auto_suppress_complaints,
        "sandbox": server.sandbox,
        "content_filter": server.content_filter,
        "content_threshold": server.content_threshold,
        "hourly_cap": server.hourly_cap,
        "daily_cap": server.daily_cap,
        "paused_at": server.paused_at,
        "paused_reason": server.paused_reason,
        "streams": [
            {"id": s.pk, "stream_id": s.stream_id, "name": s.name, "kind": s.kind} for s in streams
        ],
        "created_at": server.created_at,
    }


class EmailServerListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=EmailServerSerializer(many=True))
    def get(self, request: Request) -> Response:
        servers = email_server_list(organization=organization_of(request))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(servers, request, view=self) or []
        return paginator.get_paginated_response([server_representation(s) for s in page])

    @extend_schema(
        request=EmailServerWriteSerializer,
        responses={201: EmailServerSerializer, 403: LIMIT_REACHED, 409: CONFLICT},
    )
    def post(self, request: Request) -> Response:
        serializer = EmailServerWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = email_server_create(
            organization=organization_of(request), **serializer.validated_data
        )
        server = email_server_get(organization=server.organization, server_id=server.pk)
        return Response(server_representation(server), status=status.HTTP_201_CREATED)


class EmailServerDetailView(APIView):
    @extend_schema(responses=EmailServerSerializer)
    def get(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        return Response(server_representation(server))

    @extend_schema(
        request=EmailServerWriteSerializer(partial=True),
        responses={200: EmailServerSerializer, 403: LIMIT_REACHED, 409: CONFLICT},
    )
    def patch(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        server = email_server_get(organization=org, server_id=pk)
        serializer = EmailServerWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        email_server_update(server=server, fields=dict(serializer.validated_data))
        return Response(server_representation(email_server_get(organization=org, server_id=pk)))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        email_server_delete(organization=organization_of(request), server_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ServerKeySerializer(PausedFields):
    id = serializers.IntegerField()
    server = serializers.IntegerField(source="server_id")
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=ServerKeyKind.choices)
    prefix = serializers.CharField(help_text="The key's first characters, to tell keys apart.")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    cap_mode = serializers.ChoiceField(choices=CapMode.choices)


class ServerKeyIssuedSerializer(ServerKeySerializer):
    key = serializers.CharField(help_text="The key itself: shown this once.")


class ServerKeyCreateSerializer(serializers.Serializer[Any]):
    name = BoundedCharField(max_length=100, required=False, default="default")
    kind = serializers.ChoiceField(
        choices=ServerKeyKind.choices,
        required=False,
        default=ServerKeyKind.SEND_ONLY,
        help_text="`send_only` (default): send only; `full`: also read and change the server.",
    )
    hourly_cap = _cap_field("hourly")
    daily_cap = _cap_field("daily")
    cap_mode = serializers.ChoiceField(
        choices=CapMode.choices,
        required=False,
        help_text="Over a cap (the key's or its server's): `hold` (default) queues the mail "
        "and delivers it when the window allows; `refuse` answers 429 with the time it "
        "would be accepted.",
    )


class ServerKeyUpdateSerializer(serializers.Serializer[Any]):
    name = BoundedCharField(max_length=100, required=False)
    hourly_cap = _cap_field("hourly")
    daily_cap = _cap_field("daily")
    cap_mode = serializers.ChoiceField(choices=CapMode.choices, required=False)


class ServerKeyListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=ServerKeySerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(server_key_list(server=server), request, view=self)
        return paginator.get_paginated_response(ServerKeySerializer(page or [], many=True).data)

    @extend_schema(request=ServerKeyCreateSerializer, responses={201: ServerKeyIssuedSerializer})
    def post(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        serializer = ServerKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = server_key_create(server=server, **serializer.validated_data)
        body: dict[str, Any] = dict(ServerKeySerializer(issued.server_key).data)
        body["key"] = issued.secret  # shown once, never again
        return Response(body, status=status.HTTP_201_CREATED)


class ServerKeyDetailView(APIView):
    @extend_schema(request=ServerKeyUpdateSerializer, responses={200: ServerKeySerializer})
    def patch(self, request: Request, pk: int) -> Response:
        serializer = ServerKeyUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = server_key_update(
            organization=organization_of(request),
            key_id=pk,
            fields=dict(serializer.validated_data),
        )
        return Response(ServerKeySerializer(key).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        server_key_revoke(organization=organization_of(request), key_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BounceRuleSerializer(serializers.Serializer[Any]):
    """A bounce-class override: replies to this server's mail that contain `contains` and
    whose code or enhanced status starts with `status` get `bounce_class` (oldest rule
    first, before the built-in classification; only `hard` suppresses)."""

    id = serializers.IntegerField(read_only=True)
    contains = BoundedCharField(
        max_length=200,
        required=False,
        default="",
        allow_blank=True,
        help_text="Text the reply contains, any case.",
    )
    status = BoundedCharField(
        max_length=11,
        required=False,
        default="",
        allow_blank=True,
        help_text='A reply code ("550") or an enhanced status prefix ("5.7", "5.7.1").',
    )
    bounce_class = serializers.ChoiceField(choices=BounceClass.choices)
    created_at = serializers.DateTimeField(read_only=True)


class BounceRuleListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=BounceRuleSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(bounce_rule_list(server=server), request, view=self)
        return paginator.get_paginated_response(BounceRuleSerializer(page or [], many=True).data)

    @extend_schema(
        request=BounceRuleSerializer,
        responses={201: BounceRuleSerializer, 403: LIMIT_REACHED},
    )
    def post(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        serializer = BounceRuleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule = bounce_rule_create(server=server, **serializer.validated_data)
        return Response(BounceRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class BounceRuleDetailView(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        bounce_rule_delete(organization=organization_of(request), rule_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
