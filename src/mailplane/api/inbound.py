"""Inbound streams: a server's inbound address and domain (account key), and the messages
it received, each with its raw RFC 5322 bytes for the log retention period.

Two doors to the messages, as for webhooks (api/webhooks.py): an account key under
/api/servers/{id}/inbound/messages/ and /api/inbound-messages/{id}/, and the server's
`full` key under /api/server/inbound-messages/. A send-only key gets 403: received mail
is other people's words, more than a log of what the key sent. Another account's
message, or another server's through a server key, is not found.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import CONFLICT, INVALID, error
from mailplane.api.server_auth import FullAccessKey, ServerKeyAuthentication, server_of
from mailplane.inbound.models import InboundMessage, ServerInbound
from mailplane.inbound.parse import MimeRefused, message_parse
from mailplane.inbound.selectors import inbound_message_get, inbound_message_list
from mailplane.inbound.services import (
    inbound_address,
    mx_target,
    server_inbound_get,
    server_inbound_update,
    server_inbound_verify,
)
from mailplane.servers.models import EmailServer
from mailplane.servers.selectors import email_server_get


class ServerInboundSerializer(serializers.Serializer[Any]):
    address = serializers.CharField(
        help_text="Mail to this address reaches the server's `inbound` webhooks."
    )
    stream = serializers.CharField(help_text="The server's inbound stream id.")
    domain = serializers.CharField(allow_blank=True, help_text='"" when none is set.')
    mx_target = serializers.CharField(
        help_text="Publish `domain MX 10 mx_target`, then verify: every address at the "
        "domain reaches the server."
    )
    verified = serializers.BooleanField(help_text="The domain routes only once it is.")
    verified_at = serializers.DateTimeField(allow_null=True)
    checked_at = serializers.DateTimeField(allow_null=True)
    check_detail = serializers.CharField(allow_blank=True)


class ServerInboundWriteSerializer(serializers.Serializer[Any]):
    domain = BoundedCharField(max_length=253, allow_blank=True, help_text='"" clears it.')


class AddressSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(allow_blank=True)
    name = serializers.CharField(allow_blank=True)


class HeaderSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(allow_blank=True)
    value = serializers.CharField(allow_blank=True)


class AttachmentSerializer(serializers.Serializer[Any]):
    filename = serializers.CharField(allow_blank=True)
    content_type = serializers.CharField()
    content_id = serializers.CharField(allow_blank=True)
    size = serializers.IntegerField(help_text="Decoded bytes (the content is in `raw/`).")


class InboundMessageSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    server = serializers.IntegerField()
    stream = serializers.CharField()
    mail_from = serializers.CharField(allow_blank=True, help_text="The envelope sender.")
    rcpt_to = serializers.CharField(help_text="The address it came in on.")
    from_email = serializers.CharField(allow_blank=True)
    subject = serializers.CharField(allow_blank=True)
    message_id_header = serializers.CharField(allow_blank=True)
    spf = serializers.CharField()
    dkim = serializers.CharField(help_text="The best result of its DKIM signatures.")
    dmarc = serializers.CharField()
    size = serializers.IntegerField(help_text="Bytes of the raw message.")
    created_at = serializers.DateTimeField()


class InboundMessageDetailSerializer(InboundMessageSerializer):
    to = AddressSerializer(many=True)
    cc = AddressSerializer(many=True)
    reply_to = AddressSerializer(many=True)
    text = serializers.CharField(allow_blank=True)
    html = serializers.CharField(allow_blank=True)
    stripped_text_reply = serializers.CharField(allow_blank=True)
    headers = HeaderSerializer(many=True)
    attachments = AttachmentSerializer(many=True)


def inbound_representation(row: ServerInbound, server: EmailServer) -> dict[str, Any]:
    stream = next((s.stream_id for s in server.streams.all() if s.kind == "inbound"), "inbound")
    return {
        "address": inbound_address(row),
        "stream": stream,
        "domain": row.domain,
        "mx_target": mx_target(),
        "verified": row.verified_at is not None,
        "verified_at": row.verified_at,
        "checked_at": row.checked_at,
        "check_detail": row.check_detail,
    }


def message_representation(message: InboundMessage) -> dict[str, Any]:
    return {
        "id": message.pk,
        "server": message.server_id,
        "stream": message.stream.stream_id,
        "mail_from": message.mail_from,
        "rcpt_to": message.rcpt_to,
        "from_email": message.from_header,
        "subject": message.subject,
        "message_id_header": message.message_id_header,
        "spf": message.spf,
        "dkim": message.dkim,
        "dmarc": message.dmarc,
        "size": message.size,
        "created_at": message.created_at,
    }


def message_detail_representation(message: InboundMessage) -> dict[str, Any]:
    body = message_representation(message)
    try:
        parsed = message_parse(bytes(message.raw))
    except MimeRefused:  # the MX refuses such mail; one stored earlier under other bounds
        parsed = None
    return {
        **body,
        "to": parsed.to if parsed else [],
        "cc": parsed.cc if parsed else [],
        "reply_to": parsed.reply_to if parsed else [],
        "text": parsed.text if parsed else "",
        "html": parsed.html if parsed else "",
        "stripped_text_reply": parsed.stripped_text_reply if parsed else "",
        "headers": parsed.headers if parsed else [],
        "attachments": [
            {k: v for k, v in a.as_payload(include=False).items() if k != "content"}
            for a in (parsed.attachments if parsed else [])
        ],
    }


def raw_response(message: InboundMessage) -> HttpResponse:
    response = HttpResponse(bytes(message.raw), content_type="message/rfc822")
    response["Content-Disposition"] = f'attachment; filename="inbound-{message.pk}.eml"'
    return response


class ServerInboundView(APIView):
    @extend_schema(responses=ServerInboundSerializer)
    def get(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        return Response(inbound_representation(server_inbound_get(server=server), server))

    @extend_schema(
        request=ServerInboundWriteSerializer,
        responses={200: ServerInboundSerializer, 409: CONFLICT},
    )
    def patch(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        serializer = ServerInboundWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        row = server_inbound_update(server=server, domain=serializer.validated_data["domain"])
        return Response(inbound_representation(row, server))


class ServerInboundVerifyView(APIView):
    @extend_schema(request=None, responses={200: ServerInboundSerializer, 400: INVALID})
    def post(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        return Response(inbound_representation(server_inbound_verify(server=server), server))


RAW = OpenApiResponse(
    OpenApiTypes.BINARY,
    description="The message as received (RFC 5322), with Mailplane's Received and "
    "Authentication-Results on top.",
)
SEND_ONLY = error("A send-only key (received mail needs a full key).")


class _ListOps(APIView):
    pagination_class = LimitOffsetPagination

    def list(self, server: EmailServer, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(inbound_message_list(server=server), request, view=self)
        return paginator.get_paginated_response([message_representation(m) for m in page or []])


class ServerInboundMessageListView(_ListOps):
    @extend_schema(responses=InboundMessageSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        server = email_server_get(organization=organization_of(request), server_id=pk)
        return self.list(server, request)


class InboundMessageDetailView(APIView):
    @extend_schema(responses=InboundMessageDetailSerializer)
    def get(self, request: Request, pk: int) -> Response:
        message = inbound_message_get(organization=organization_of(request), message_id=pk)
        return Response(message_detail_representation(message))


class _Raw(APIView):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # A client asking for message/rfc822 must still get JSON errors, not a 406.
        return super().perform_content_negotiation(request, force=True)


class InboundMessageRawView(_Raw):
    @extend_schema(responses={(200, "message/rfc822"): RAW})
    def get(self, request: Request, pk: int) -> HttpResponse:
        message = inbound_message_get(organization=organization_of(request), message_id=pk)
        return raw_response(message)


class ServerSelfInboundMessageListView(_ListOps):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]

    @extend_schema(responses={200: InboundMessageSerializer(many=True), 403: SEND_ONLY})
    def get(self, request: Request) -> Response:
        return self.list(server_of(request), request)


class ServerSelfInboundMessageDetailView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]

    @extend_schema(responses={200: InboundMessageDetailSerializer, 403: SEND_ONLY})
    def get(self, request: Request, pk: int) -> Response:
        message = inbound_message_get(server=server_of(request), message_id=pk)
        return Response(message_detail_representation(message))


class ServerSelfInboundMessageRawView(_Raw):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]

    @extend_schema(responses={(200, "message/rfc822"): RAW, 403: SEND_ONLY})
    def get(self, request: Request, pk: int) -> HttpResponse:
        message = inbound_message_get(server=server_of(request), message_id=pk)
        return raw_response(message)
