"""The send API, authenticated by a server key (api/server_auth.py).

POST /api/email/        one message       (Postmark: POST /email)
POST /api/email/batch/  up to 500         (Postmark: POST /email/batch)
GET/PATCH /api/server/  the key's server  (Postmark: GET/PUT /server; full keys only)

Field names follow Mailgun and Resend (`from`, `to`, `cc`, `bcc`, `reply_to`, `subject`,
`text`, `html`, `headers`, `tags`), whose JSON users type by hand; `metadata` and `stream`
are Postmark's `Metadata` and `MessageStream` in the same lower-case style. A 200 comes
only after the commit that makes the message durable (sending/services.py).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.parsers import BodyUnreadable, body_too_large, declared_length, json_check
from mailplane.api.schema import CONFLICT, error
from mailplane.api.server_auth import (
    FullAccessKey,
    HasServerKey,
    ServerKeyAuthentication,
    server_key_of,
    server_of,
)
from mailplane.api.servers import (
    EmailServerSerializer,
    EmailServerWriteSerializer,
    server_representation,
)
from mailplane.core.errors import DomainError, ValidationFailed
from mailplane.queue.models import RecipientStatus
from mailplane.sending.idempotency import HEADER, Answer, idempotent_answer
from mailplane.sending.requests import MAX_RECIPIENTS, MESSAGE_MAX_BYTES, send_request_parse
from mailplane.sending.services import BATCH_MAX, Sent, message_send, messages_send_batch
from mailplane.servers.models import EmailServer
from mailplane.servers.selectors import email_server_get
from mailplane.servers.services import email_server_update

# A JSON body carries a 10 MB message with escaping to spare; a batch as Postmark's 50 MB.
SEND_BODY_MAX = 2 * MESSAGE_MAX_BYTES
BATCH_BODY_MAX = 50 * 1024 * 1024


class _BoundedJSONParser(BaseParser):
    """api/parsers.BoundedJSONParser's checks (size before reading, depth, text), with the
    send API's larger limit: the account API's 1 MiB would refuse most HTML mail.

    Not a JSONParser subclass on purpose: DRF reads `request.body` for those, which holds
    the whole body in memory first and stops at DATA_UPLOAD_MAX_MEMORY_SIZE (6 MiB); this
    one reads the stream itself, at most `limit` + 1 bytes."""

    media_type = "application/json"
    limit = SEND_BODY_MAX

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        if request is not None and declared_length(request) > self.limit:
            raise body_too_large(self.limit)
        raw = stream.read(self.limit + 1)
        if len(raw) > self.limit:
            raise body_too_large(self.limit)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        depth = int(settings.MAILPLANE["API_MAX_JSON_DEPTH"])
        try:
            data = json.loads(codecs.decode(raw, encoding), parse_constant=_refuse_constant)
        except RecursionError as exc:
            raise _unreadable(f"is nested more than {depth} levels deep") from exc
        except (ValueError, LookupError) as exc:  # bad JSON or text, NaN, unknown charset
            raise _unreadable(f"is not valid JSON: {exc}") from exc
        json_check(data, max_depth=depth)
        return data


class SendJSONParser(_BoundedJSONParser):
    limit = SEND_BODY_MAX


class BatchJSONParser(_BoundedJSONParser):
    limit = BATCH_BODY_MAX


def _unreadable(message: str) -> ValidationFailed:
    return BodyUnreadable(f"body: {message}", details={"body": [message]})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")  # RFC 8259 §6


@extend_schema_field(
    {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
)
class AddressesField(serializers.Field):
    """`"a@x.test, B <b@x.test>"` or `["a@x.test", "B <b@x.test>"]`."""


class AttachmentSerializer(serializers.Serializer[Any]):
    filename = serializers.CharField(max_length=255)
    content = serializers.CharField(help_text="The file's bytes, base64 (RFC 4648 §4).")
    content_type = serializers.CharField(
        required=False, help_text='A MIME type; default "application/octet-stream".'
    )


class SendMessageSerializer(serializers.Serializer[Any]):
    """For the schema; sending/requests.py reads the body (and names every bad field)."""

    to = AddressesField(help_text=f"Recipients; to, cc and bcc together at most {MAX_RECIPIENTS}.")
    cc = AddressesField(required=False)
    bcc = AddressesField(required=False, help_text="Envelope only: never written in the header.")
    reply_to = AddressesField(required=False)
    subject = serializers.CharField(required=False, max_length=998)
    text = serializers.CharField(required=False, help_text="Plain-text body; text, html or both.")
    html = serializers.CharField(required=False, help_text="HTML body.")
    headers = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text="Custom header fields, name to value; fields the platform sets (From, "
        "Sender, Message-ID, DKIM-Signature, Return-Path, Date, MIME fields…) are refused.",
    )
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    metadata = serializers.DictField(
        child=serializers.CharField(max_length=500),
        required=False,
        help_text="Your own key-value pairs, kept with the message.",
    )
    stream = serializers.CharField(
        required=False, help_text="A stream id of the server; default its default stream."
    )
    attachments = AttachmentSerializer(
        many=True,
        required=False,
        help_text="At most 10 files; the whole message at most 10 MB.",
    )
    test_mode = serializers.BooleanField(
        required=False,
        help_text="Check and record the message as delivered, and send nothing (as on a "
        "sandbox server; Mailgun's `o:testmode`).",
    )
    track_opens = serializers.BooleanField(
        required=False,
        allow_null=True,
        help_text="Add the open pixel to the HTML (Postmark's TrackOpens); default: as the "
        "stream and server say. Needs a verified tracking domain.",
    )
    track_links = serializers.BooleanField(
        required=False,
        allow_null=True,
        help_text="Rewrite the HTML's links to click redirects (Postmark's TrackLinks); "
        "default: as the stream and server say. Needs a verified tracking domain.",
    )
    send_at = serializers.DateTimeField(
        required=False,
        help_text="Hold the message until then: an RFC 3339 date-time with an offset, in "
        "the future and at most 72 hours ahead (else 422 naming `send_at`). Until it "
        "leaves it can be cancelled (`POST /api/server/messages/{id}/cancel/`) or moved "
        "(`PATCH /api/server/messages/{id}/`).",
    )


# `from` is a Python keyword: declared after the class.
SendMessageSerializer._declared_fields["from"] = serializers.CharField(
    help_text="The sender, `a@x.test` or `Name <a@x.test>`: its domain must be a verified "
    "domain of the account (else 422)."
)


SENT_STATUSES = [
    RecipientStatus.QUEUED,
    RecipientStatus.SCHEDULED,
    RecipientStatus.HELD,
    RecipientStatus.DELIVERED,
    RecipientStatus.SUPPRESSED,
]


class SentSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(help_text="The message: `GET /api/messages/{id}/`.")
    message_id = serializers.CharField(help_text="Its Message-ID header field.")
    stream = serializers.CharField()
    status = serializers.ChoiceField(
        choices=SENT_STATUSES,
        help_text="`queued`; `scheduled` with a `send_at`; `held` when the server's content "
        "filter (`content_filter: hold`) holds it for review (the queue's "
        "`/release/` sends it); `delivered` on a sandbox server (recorded, never sent); "
        "`suppressed` when every recipient is on the suppression list.",
    )
    to = serializers.ListField(child=serializers.CharField(), help_text="Envelope recipients.")
    suppressed = serializers.ListField(
        child=serializers.CharField(),
        help_text="Recipients on the account's suppression list: recorded as suppressed, "
        "sent nothing.",
    )
    submitted_at = serializers.DateTimeField()
    send_at = serializers.DateTimeField(
        allow_null=True, help_text="When a scheduled message leaves; null: now."
    )


class BatchItemErrorSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class BatchItemSerializer(serializers.Serializer[Any]):
    index = serializers.IntegerField(help_text="Position in the request, from 0.")
    status = serializers.ChoiceField(choices=[*SENT_STATUSES, "error"])
    id = serializers.IntegerField(required=False)
    message_id = serializers.CharField(required=False)
    stream = serializers.CharField(required=False)
    to = serializers.ListField(child=serializers.CharField(), required=False)
    suppressed = serializers.ListField(child=serializers.CharField(), required=False)
    submitted_at = serializers.DateTimeField(required=False)
    send_at = serializers.DateTimeField(required=False, allow_null=True)
    error = BatchItemErrorSerializer(required=False, help_text="Why this one was refused.")


def _sent(sent: Sent) -> dict[str, Any]:
    return {
        "id": sent.message.pk,
        "message_id": sent.message.message_id,
        "stream": sent.stream.stream_id,
        "status": sent.status,
        "to": sent.recipients,
        "suppressed": sent.suppressed,
        "submitted_at": sent.message.created_at,
        "send_at": sent.send_at,
    }


IDEMPOTENCY = OpenApiParameter(
    HEADER,
    str,
    location=OpenApiParameter.HEADER,
    description="Up to 256 visible ASCII characters, kept 24 hours: the same key with the "
    "same body answers as the first time (`Idempotent-Replayed: true`); with another body, or "
    "while the first is still in progress, 409.",
)
IDEMPOTENCY_CONFLICT = error(
    "The `Idempotency-Key` was used with another body, or its first request is in progress."
)
REPLAYED = "Idempotent-Replayed"


def _as_json(body: Any) -> Any:
    """The body as the client reads it (datetimes as DRF renders them), for storing."""
    return json.loads(JSONRenderer().render(body))


def _answer(request: Request, server: EmailServer, run: Callable[[], Answer]) -> Response:
    """`run` once per Idempotency-Key (sending/idempotency.py), answered over HTTP."""
    answer = idempotent_answer(
        server=server,
        header=request.headers.get(HEADER),
        path=request.path,
        data=request.data,
        run=run,
        as_stored=_as_json,
    )
    headers = {REPLAYED: "true"} if answer.replayed else None
    return Response(answer.body, status=answer.status, headers=headers)


def _item(index: int, result: Sent | DomainError) -> dict[str, Any]:
    """One batch item: the message sent, or its refusal in the one error shape."""
    if isinstance(result, DomainError):
        return {"index": index, "status": "error", **result.http_body()}
    return {"index": index, **_sent(result)}


SENDER_NOT_VERIFIED = error(
    "`from` is not a verified sender identity of the account; or `send_at` is not an RFC "
    "3339 time within 72 hours; or the broadcast stream refuses the message (more than one "
    "recipient, or a List-Unsubscribe header of its own)."
)
MESSAGE_TOO_LARGE = error(f"The message (or the body) is over {MESSAGE_MAX_BYTES} bytes.")
SENDING_PAUSED = error(
    "`sending_paused`: the server or key is paused (its bounce or complaint rate), until an "
    "operator resumes it; or `limit_reached`: more recipients than a volume cap allows at all."
)
OVER_CAP = error(
    "`over_cap`: a key in `refuse` mode is over its (or its server's) hourly or daily cap; "
    "`Retry-After` and `details.retry_at` say when the message would be accepted."
)


class EmailSendView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [HasServerKey]
    parser_classes = [SendJSONParser]

    @extend_schema(
        operation_id="email_send",
        request=SendMessageSerializer,
        parameters=[IDEMPOTENCY],
        responses={
            200: SentSerializer,
            403: SENDING_PAUSED,
            409: IDEMPOTENCY_CONFLICT,
            413: MESSAGE_TOO_LARGE,
            422: SENDER_NOT_VERIFIED,
            429: OVER_CAP,
        },
    )
    def post(self, request: Request) -> Response:
        server = server_of(request)

        def run() -> Answer:
            sent = message_send(
                server=server,
                request=send_request_parse(request.data),
                server_key=server_key_of(request),
            )
            return Answer(200, _sent(sent))

        return _answer(request, server, run)


class EmailBatchView(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [HasServerKey]
    parser_classes = [BatchJSONParser]

    @extend_schema(
        operation_id="email_batch",
        request=SendMessageSerializer(many=True),
        parameters=[IDEMPOTENCY],
        responses={
            200: BatchItemSerializer(many=True),
            403: SENDING_PAUSED,
            409: IDEMPOTENCY_CONFLICT,
            413: MESSAGE_TOO_LARGE,
        },
        description=f"Up to {BATCH_MAX} messages; one result per message, in order (200 "
        "even when some are refused: each refusal is in its item). The accepted ones are "
        "queued in one transaction.",
    )
    def post(self, request: Request) -> Response:
        server = server_of(request)

        def run() -> Answer:
            results = messages_send_batch(
                server=server, items=request.data, server_key=server_key_of(request)
            )
            return Answer(200, [_item(index, one) for index, one in enumerate(results)])

        return _answer(request, server, run)


class ServerView(APIView):
    """The key's own server; a send-only key gets 403 (seed 004)."""

    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [FullAccessKey]

    @extend_schema(
        operation_id="server_retrieve",
        responses={200: EmailServerSerializer, 403: error("A send-only key.")},
    )
    def get(self, request: Request) -> Response:
        server = server_of(request)
        server = email_server_get(organization=server.organization, server_id=server.pk)
        return Response(server_representation(server))

    @extend_schema(
        operation_id="server_update",
        request=EmailServerWriteSerializer(partial=True),
        responses={
            200: EmailServerSerializer,
            403: error("A send-only key, or a plan limit."),
            409: CONFLICT,
        },
    )
    def patch(self, request: Request) -> Response:
        server = server_of(request)
        serializer = EmailServerWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        email_server_update(server=server, fields=dict(serializer.validated_data))
        server = email_server_get(organization=server.organization, server_id=server.pk)
        return Response(server_representation(server))
