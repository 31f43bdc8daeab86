"""Webhook endpoints of an email server: create (the `whsec_` secret shown once), list,
change, delete, rotate the secret, read the attempts, replay.

Two doors to the same services, as Postmark has (webhooks are managed with a server
token there): an account key under /api/servers/{id}/webhooks/ and /api/webhooks/{id}/,
and a server's `full` key under /api/server/webhooks/ (send-only keys: 403). Another
account's endpoint, or another server's through a server key, is not found.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import LIMIT_REACHED, error
from mailplane.api.server_auth import (
    AccountServerDoor,
    KeyServerDoor,
    ServerDoor,
    server_of,
)
from mailplane.webhooks.models import DeliveryState, WebhookEndpoint, WebhookEventType
from mailplane.webhooks.selectors import (
    webhook_attempt_list,
    webhook_endpoint_get,
    webhook_endpoint_list,
    webhook_notice_list,
)
from mailplane.webhooks.services import (
    CONCURRENCY_MAX,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_update,
    webhook_replay,
    webhook_secret_rotate,
)


class EventTypesField(serializers.ListField):
    """A list of event types whose errors name the field, not an index inside it (the
    one error shape maps a field to a list of messages)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            child=serializers.ChoiceField(choices=WebhookEventType.choices),
            allow_empty=False,
            max_length=len(WebhookEventType.values),
            **kwargs,
        )

    def run_child_validation(self, data: list[Any]) -> list[Any]:
        result = []
        for item in data:
            if not isinstance(item, str) or item not in WebhookEventType.values:
                shown = str(item)[:40]
                raise serializers.ValidationError(
                    [f"{shown!r} is not an event type; one of {', '.join(WebhookEventType.values)}"]
                )
            result.append(item)
        return result


class WebhookEndpointSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    server = serializers.IntegerField(source="server_id")
    url = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEventType.choices)
    )
    enabled = serializers.BooleanField()
    disabled_at = serializers.DateTimeField(allow_null=True)
    disabled_reason = serializers.CharField(
        allow_blank=True, help_text="Why it was switched off (410 Gone, failing too long)."
    )
    max_concurrency = serializers.IntegerField(help_text="Requests in flight at most.")
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True,
        help_text="After a rotation: until then the old secret signs too (two signatures).",
    )
    created_at = serializers.DateTimeField()


class WebhookEndpointIssuedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(help_text="`whsec_…`: shown this once.")


class WebhookEndpointWriteSerializer(serializers.Serializer[Any]):
    url = BoundedCharField(max_length=2000, help_text="http:// or https://; public hosts only.")
    event_types = EventTypesField()
    description = BoundedCharField(max_length=200, allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
    max_concurrency = serializers.IntegerField(
        min_value=1, max_value=CONCURRENCY_MAX, required=False
    )


class WebhookSecretSerializer(serializers.Serializer[Any]):
    secret = serializers.CharField(help_text="The new `whsec_…` secret: shown this once.")
    previous_secret_expires_at = serializers.DateTimeField()


class WebhookAttemptSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    delivery = serializers.IntegerField(source="delivery_id")
    webhook_id = serializers.CharField(source="delivery.webhook_id")
    type = serializers.ChoiceField(source="delivery.type", choices=WebhookEventType.choices)
    delivery_state = serializers.ChoiceField(source="delivery.state", choices=DeliveryState.choices)
    started_at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True, help_text="No answer: why.")
    response_excerpt = serializers.CharField(
        allow_blank=True, help_text="The first bytes of the receiver's answer."
    )


class WebhookReplaySerializer(serializers.Serializer[Any]):
    delivery = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1, required=False, help_text="One delivery's id."
    )
    since = serializers.DateTimeField(required=False, help_text="Events from this time …")
    until = serializers.DateTimeField(required=False, help_text="… to this one (excluded).")


class WebhookReplayedSerializer(serializers.Serializer[Any]):
    replayed = serializers.IntegerField(help_text="Deliveries queued again.")


class WebhookNoticeSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    endpoint = serializers.IntegerField(source="endpoint_id")
    kind = serializers.CharField()
    message = serializers.CharField()
    created_at = serializers.DateTimeField()


def endpoint_representation(endpoint: WebhookEndpoint) -> dict[str, Any]:
    expires = endpoint.previous_secret_expires_at
    if expires is not None and expires <= timezone.now():
        expires = None
    return {
        "id": endpoint.pk,
        "server": endpoint.server_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
        "max_concurrency": endpoint.max_concurrency,
        "previous_secret_expires_at": expires,
        "created_at": endpoint.created_at,
    }


# --- the operations, each written once; the two doors below say how to find the server.


class _Scoped(ServerDoor):
    def endpoint(self, request: Request, pk: int) -> WebhookEndpoint:
        raise NotImplementedError


class _AccountScope(AccountServerDoor, _Scoped):
    def endpoint(self, request: Request, pk: int) -> WebhookEndpoint:
        return webhook_endpoint_get(organization=organization_of(request), endpoint_id=pk)


class _ServerScope(KeyServerDoor, _Scoped):
    def endpoint(self, request: Request, pk: int) -> WebhookEndpoint:
        return webhook_endpoint_get(server=server_of(request), endpoint_id=pk)


class _ListOps(_Scoped):
    pagination_class = LimitOffsetPagination

    def list(self, request: Request, pk: int | None) -> Response:
        endpoints = webhook_endpoint_list(server=self.server(request, pk))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(endpoints, request, view=self) or []
        return paginator.get_paginated_response([endpoint_representation(e) for e in page])

    def create(self, request: Request, pk: int | None) -> Response:
        server = self.server(request, pk)
        serializer = WebhookEndpointWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = webhook_endpoint_create(server=server, **serializer.validated_data)
        body = {**endpoint_representation(issued.endpoint), "secret": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class _DetailOps(_Scoped):
    def retrieve(self, request: Request, pk: int) -> Response:
        return Response(endpoint_representation(self.endpoint(request, pk)))

    def update(self, request: Request, pk: int) -> Response:
        endpoint = self.endpoint(request, pk)
        serializer = WebhookEndpointWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        webhook_endpoint_update(endpoint=endpoint, fields=dict(serializer.validated_data))
        return Response(endpoint_representation(self.endpoint(request, pk)))

    def destroy(self, request: Request, pk: int) -> Response:
        webhook_endpoint_delete(endpoint=self.endpoint(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class _RotateOps(_Scoped):
    def rotate(self, request: Request, pk: int) -> Response:
        issued = webhook_secret_rotate(endpoint=self.endpoint(request, pk))
        return Response(
            {
                "secret": issued.secret,
                "previous_secret_expires_at": issued.endpoint.previous_secret_expires_at,
            }
        )


class _AttemptOps(_Scoped):
    pagination_class = LimitOffsetPagination

    def attempts(self, request: Request, pk: int) -> Response:
        attempts = webhook_attempt_list(endpoint=self.endpoint(request, pk))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(attempts, request, view=self) or []
        return paginator.get_paginated_response(WebhookAttemptSerializer(page, many=True).data)


class _ReplayOps(_Scoped):
    def replay(self, request: Request, pk: int) -> Response:
        endpoint = self.endpoint(request, pk)
        serializer = WebhookReplaySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        count = webhook_replay(
            endpoint=endpoint,
            delivery_id=data.get("delivery"),
            since=data.get("since"),
            until=data.get("until"),
        )
        return Response({"replayed": count}, status=status.HTTP_202_ACCEPTED)


SEND_ONLY = error("A send-only key (webhooks need a full key).")
LIMIT_OR_SEND_ONLY = error("A send-only key, or the server's endpoint limit.")


class _Schemas:
    """Each operation's schema, for one door: the server door adds its 403 (a send-only
    key) to every operation."""

    def __init__(self, *, server_key: bool) -> None:
        extra: dict[int, Any] = {403: SEND_ONLY} if server_key else {}
        limit = LIMIT_OR_SEND_ONLY if server_key else LIMIT_REACHED
        self.list_get = extend_schema(
            responses={200: WebhookEndpointSerializer(many=True), **extra}
        )
        self.list_post = extend_schema(
            request=WebhookEndpointWriteSerializer,
            responses={201: WebhookEndpointIssuedSerializer, 403: limit},
        )
        self.detail_get = extend_schema(responses={200: WebhookEndpointSerializer, **extra})
        self.detail_patch = extend_schema(
            request=WebhookEndpointWriteSerializer(partial=True),
            responses={200: WebhookEndpointSerializer, **extra},
        )
        self.detail_delete = extend_schema(responses={204: None, **extra})
        self.rotate = extend_schema(request=None, responses={200: WebhookSecretSerializer, **extra})
        self.attempts = extend_schema(responses={200: WebhookAttemptSerializer(many=True), **extra})
        self.replay = extend_schema(
            request=WebhookReplaySerializer,
            responses={202: WebhookReplayedSerializer, 403: limit},
        )


ACCOUNT = _Schemas(server_key=False)
SERVER = _Schemas(server_key=True)


# --- account keys


class ServerWebhookListView(_AccountScope, _ListOps):
    @ACCOUNT.list_get
    def get(self, request: Request, pk: int) -> Response:
        return self.list(request, pk)

    @ACCOUNT.list_post
    def post(self, request: Request, pk: int) -> Response:
        return self.create(request, pk)


class WebhookDetailView(_AccountScope, _DetailOps):
    @ACCOUNT.detail_get
    def get(self, request: Request, pk: int) -> Response:
        return self.retrieve(request, pk)

    @ACCOUNT.detail_patch
    def patch(self, request: Request, pk: int) -> Response:
        return self.update(request, pk)

    @ACCOUNT.detail_delete
    def delete(self, request: Request, pk: int) -> Response:
        return self.destroy(request, pk)


class WebhookRotateView(_AccountScope, _RotateOps):
    @ACCOUNT.rotate
    def post(self, request: Request, pk: int) -> Response:
        return self.rotate(request, pk)


class WebhookAttemptListView(_AccountScope, _AttemptOps):
    @ACCOUNT.attempts
    def get(self, request: Request, pk: int) -> Response:
        return self.attempts(request, pk)


class WebhookReplayView(_AccountScope, _ReplayOps):
    @ACCOUNT.replay
    def post(self, request: Request, pk: int) -> Response:
        return self.replay(request, pk)


class WebhookNoticeListView(APIView):
    """What the account has been told about its endpoints (one disabled, and why)."""

    pagination_class = LimitOffsetPagination

    @extend_schema(responses=WebhookNoticeSerializer(many=True))
    def get(self, request: Request) -> Response:
        notices = webhook_notice_list(organization=organization_of(request))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(notices, request, view=self) or []
        return paginator.get_paginated_response(WebhookNoticeSerializer(page, many=True).data)


# --- a server's full key


class ServerSelfWebhookListView(_ServerScope, _ListOps):
    @SERVER.list_get
    def get(self, request: Request) -> Response:
        return self.list(request, None)

    @SERVER.list_post
    def post(self, request: Request) -> Response:
        return self.create(request, None)


class ServerSelfWebhookDetailView(_ServerScope, _DetailOps):
    @SERVER.detail_get
    def get(self, request: Request, pk: int) -> Response:
        return self.retrieve(request, pk)

    @SERVER.detail_patch
    def patch(self, request: Request, pk: int) -> Response:
        return self.update(request, pk)

    @SERVER.detail_delete
    def delete(self, request: Request, pk: int) -> Response:
        return self.destroy(request, pk)


class ServerSelfWebhookRotateView(_ServerScope, _RotateOps):
    @SERVER.rotate
    def post(self, request: Request, pk: int) -> Response:
        return self.rotate(request, pk)


class ServerSelfWebhookAttemptListView(_ServerScope, _AttemptOps):
    @SERVER.attempts
    def get(self, request: Request, pk: int) -> Response:
        return self.attempts(request, pk)


class ServerSelfWebhookReplayView(_ServerScope, _ReplayOps):
    @SERVER.replay
    def post(self, request: Request, pk: int) -> Response:
        return self.replay(request, pk)
