"""/webhooks/mailgun/<relay>/ and /webhooks/sendgrid/<relay>/: the providers' event webhooks.

Outside /api/ and without API-key auth: the provider authenticates each call with the
relay server's webhook secret (delivery/providers/mailgun.py and sendgrid.py check it).
Answers follow what providers do with them: 2xx for anything authentic, even events we ignore (they
disable endpoints that keep failing); 503 + Retry-After when a row's send is still being
recorded (they retry); 400 for a malformed body; 403 for a bad signature; 404 when the
relay server has no receiver. Each refusal is a domain error the receivers raise
(delivery/providers/webhooks.py), rendered by api/errors.py.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.schema import error
from mailplane.delivery.providers.mailgun import mailgun_webhook_receive
from mailplane.delivery.providers.sendgrid import sendgrid_webhook_receive


class ReceiptSerializer(serializers.Serializer[Any]):
    """What became of the call's events (`WebhookReceipt.as_dict`)."""

    received = serializers.IntegerField()
    recorded = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="Recorded by an earlier call.")
    ignored = serializers.IntegerField(help_text="Unknown ids or events we do not track.")
    in_flight = serializers.IntegerField(help_text="Still being recorded here (then 503).")


class SendGridEventSerializer(serializers.Serializer[Any]):
    """One event of SendGrid's batch (its other fields are read where they matter)."""

    event = serializers.CharField(help_text="delivered, deferred, bounce, dropped, …")
    email = serializers.CharField()
    timestamp = serializers.IntegerField()
    sg_event_id = serializers.CharField(required=False)
    sg_message_id = serializers.CharField(required=False)
    mailplane_recipient_id = serializers.CharField(
        required=False, help_text="Our recipient id, sent as a custom arg."
    )


_RECEIPT = OpenApiResponse(ReceiptSerializer, description="Authentic.")
_RESPONSES = {
    200: _RECEIPT,
    400: error("Not a webhook body this endpoint reads."),
    403: error("The signature does not verify, or is too old."),
    404: error("No such relay server, or it has no receiver configured."),
    503: error("A reported message is still being recorded: call again (`Retry-After`)."),
}
_RETRY_AFTER = OpenApiParameter(
    "Retry-After", int, OpenApiParameter.HEADER, response=[503], description="Seconds."
)


class _ProviderWebhookView(APIView):
    # The signature is the authentication; the raw body is what it covers, so no parser.
    authentication_classes = ()
    permission_classes = (AllowAny,)
    parser_classes = ()


class MailgunWebhookView(_ProviderWebhookView):
    @extend_schema(
        operation_id="webhook_mailgun",
        auth=[],
        # The views have no parsers (the signature covers the raw body): name the type.
        request={"application/json": OpenApiTypes.OBJECT},
        responses=_RESPONSES,
        parameters=[_RETRY_AFTER],
        description="Mailgun webhook (JSON) for a Mailgun relay server with "
        "credentials.webhook_signing_key set; signed by Mailgun.",
    )
    def post(self, request: Request, relay_id: int) -> Response:
        receipt = mailgun_webhook_receive(
            relay_server_id=relay_id, body=request.body, now=timezone.now()
        )
        return Response(receipt.as_dict())


class SendGridWebhookView(_ProviderWebhookView):
    @extend_schema(
        operation_id="webhook_sendgrid",
        auth=[],
        request={"application/json": SendGridEventSerializer(many=True)},
        responses=_RESPONSES,
        parameters=[
            _RETRY_AFTER,
            OpenApiParameter(
                "X-Twilio-Email-Event-Webhook-Signature", str, OpenApiParameter.HEADER
            ),
            OpenApiParameter(
                "X-Twilio-Email-Event-Webhook-Timestamp", str, OpenApiParameter.HEADER
            ),
        ],
        description="SendGrid Signed Event Webhook for a SendGrid relay server with "
        "credentials.webhook_verification_key set.",
    )
    def post(self, request: Request, relay_id: int) -> Response:
        receipt = sendgrid_webhook_receive(
            relay_server_id=relay_id,
            body=request.body,
            signature=request.headers.get("X-Twilio-Email-Event-Webhook-Signature", ""),
            timestamp=request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", ""),
            now=timezone.now(),
        )
        return Response(receipt.as_dict())
