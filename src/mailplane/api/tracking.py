"""Tracking: a server's tracking domain and toggles (account key), and the open pixel
and click redirect that recipients' mail clients fetch (no key: the token is the right).

The public routes answer 404 for anything that is not a live token, in constant work
(the token's length is checked before any lookup), and the redirect goes only to the URL
stored for the token: a token cannot be made to point anywhere else (no open redirect).
"""

from __future__ import annotations

import base64
from typing import Any

from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.utils.cache import add_never_cache_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField
from mailplane.api.schema import INVALID, NOT_FOUND
from mailplane.api.throttling import client_address
from mailplane.servers.selectors import email_server_get
from mailplane.tracking.models import ServerTracking
from mailplane.tracking.selectors import server_tracking_get, stream_tracking_list
from mailplane.tracking.services import (
    Hit,
    click_record,
    open_record,
    server_tracking_update,
    tracking_domain_verify,
    tracking_host,
)

# The smallest transparent GIF (43 bytes): GIF89a, 1x1, one transparent colour.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


class StreamTogglesSerializer(serializers.Serializer[Any]):
    track_opens = serializers.BooleanField(
        required=False, allow_null=True, help_text="null: as the server."
    )
    track_links = serializers.BooleanField(
        required=False, allow_null=True, help_text="null: as the server."
    )


class ServerTrackingSerializer(serializers.Serializer[Any]):
    domain = serializers.CharField(allow_blank=True, help_text='"" when none is set.')
    cname_target = serializers.CharField(
        help_text="Publish `domain CNAME cname_target`, then verify."
    )
    verified = serializers.BooleanField(help_text="Nothing is tracked until it is.")
    verified_at = serializers.DateTimeField(allow_null=True)
    checked_at = serializers.DateTimeField(allow_null=True)
    check_detail = serializers.CharField(allow_blank=True)
    track_opens = serializers.BooleanField()
    track_links = serializers.BooleanField()
    streams = serializers.DictField(
        child=StreamTogglesSerializer(), help_text="Overrides by stream id."
    )


def _flat(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        return [m for k, v in detail.items() for m in _flat(v, f"{prefix}{k}.")]
    if isinstance(detail, list):
        return [m for v in detail for m in _flat(v, prefix)]
    return [f"{prefix.rstrip('.')}: {detail}" if prefix else str(detail)]


class StreamTogglesField(serializers.DictField):
    """Toggles by stream id; errors as "outbound.track_opens: …" strings, the one error
    shape (a list of messages per field)."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(_flat(exc.detail)) from exc


class ServerTrackingWriteSerializer(serializers.Serializer[Any]):
    domain = BoundedCharField(
        max_length=253,
        required=False,
        allow_blank=True,
        help_text="A host name under one of your domains, e.g. track.example.com.",
    )
    track_opens = serializers.BooleanField(required=False)
    track_links = serializers.BooleanField(required=False)
    streams = StreamTogglesField(
        child=StreamTogglesSerializer(),
        required=False,
        help_text='By stream id: {"broadcast": {"track_opens": true, "track_links": null}}.',
    )


def tracking_representation(row: ServerTracking, streams: dict[str, Any]) -> dict[str, Any]:
    return {
        "domain": row.domain,
        "cname_target": tracking_host(),
        "verified": row.verified_at is not None,
        "verified_at": row.verified_at,
        "checked_at": row.checked_at,
        "check_detail": row.check_detail,
        "track_opens": row.track_opens,
        "track_links": row.track_links,
        "streams": {
            sid: {"track_opens": s.track_opens, "track_links": s.track_links}
            for sid, s in sorted(streams.items())
        },
    }


class ServerTrackingView(APIView):
    @extend_schema(responses=ServerTrackingSerializer)
    def get(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        return Response(
            tracking_representation(
                server_tracking_get(server=server), stream_tracking_list(server=server)
            )
        )

    @extend_schema(request=ServerTrackingWriteSerializer, responses=ServerTrackingSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        serializer = ServerTrackingWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = server_tracking_update(server=server, **serializer.validated_data)
        return Response(tracking_representation(row, stream_tracking_list(server=server)))


class ServerTrackingVerifyView(APIView):
    @extend_schema(request=None, responses={200: ServerTrackingSerializer, 400: INVALID})
    def post(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        row = tracking_domain_verify(server=server)
        return Response(tracking_representation(row, stream_tracking_list(server=server)))


def _hit(request: Request) -> Hit:
    return Hit(
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        ip=client_address(request.META),
    )


class _PublicView(APIView):
    """No key: the token in the path is the only right, as in the mail it was sent in."""

    authentication_classes = ()
    permission_classes = (AllowAny,)


class TrackingOpenView(_PublicView):
    @extend_schema(
        operation_id="tracking_open",
        auth=[],
        responses={
            (200, "image/gif"): OpenApiResponse(
                OpenApiTypes.BINARY, description="A transparent 1x1 GIF; `opened` recorded."
            ),
            404: NOT_FOUND,
        },
        description="The open pixel of a tracked message (under the server's tracking domain).",
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        if not open_record(token=token, hit=_hit(request)):
            raise Http404("no such token")
        response = HttpResponse(PIXEL, content_type="image/gif")
        add_never_cache_headers(response)  # every open must reach us, not a cache on the way
        return response


class TrackingClickView(_PublicView):
    @extend_schema(
        operation_id="tracking_click",
        auth=[],
        responses={
            302: OpenApiResponse(
                description="To the link's original URL (`Location`); `clicked` recorded."
            ),
            404: NOT_FOUND,
        },
        description="A tracked link of a message (under the server's tracking domain).",
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        url = click_record(token=token, hit=_hit(request))
        if url is None:
            raise Http404("no such token")
        response = HttpResponseRedirect(url)  # only ever the stored http(s) URL
        add_never_cache_headers(response)
        response["Referrer-Policy"] = "no-referrer"  # the token stays out of the site's logs
        return response
