"""/api/sender-identities/…: single addresses an account sends from (Postmark's Sender
Signatures), managed with an account key; server keys cannot (api/server_auth.py keys
reach only the send API). A verified domain covers its addresses without one.

The confirmation link (servers/identities.py) is public: its token is the credential.
GET shows a page with a Confirm button (mail scanners fetch links; a GET changes
nothing), POST confirms. A browser (Accept: text/html) is answered pages, refusals
included; any other client the API's JSON and its one error shape.
"""

from __future__ import annotations

import html
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import BoundedCharField, OwnedField
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.parsers import BoundedJSONParser
from mailplane.api.schema import CONFLICT, LIMIT_REACHED, error
from mailplane.core.errors import DomainError
from mailplane.servers.identities import (
    CONFIRM_PATH,
    sender_identity_confirm,
    sender_identity_create,
    sender_identity_delete,
    sender_identity_pending,
    sender_identity_resend,
)
from mailplane.servers.models import EmailServer, IdentityStatus, SenderIdentity
from mailplane.servers.selectors import sender_identity_get, sender_identity_list


class SenderIdentitySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    address = serializers.CharField()
    name = serializers.CharField(allow_blank=True)
    server = serializers.IntegerField(
        source="server_id",
        allow_null=True,
        help_text="The one server that may send from it; null: every server of the account.",
    )
    status = serializers.ChoiceField(
        choices=IdentityStatus.choices,
        help_text="`pending` until the link mailed to the address is used; sending from a "
        "pending identity is refused (422).",
    )
    confirmation_sent_at = serializers.DateTimeField(allow_null=True)
    confirmation_expires_at = serializers.DateTimeField(
        source="token_expires_at", allow_null=True, help_text="When the last link stops working."
    )
    confirmed_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class SenderIdentityCreateSerializer(serializers.Serializer[Any]):
    address = BoundedCharField(max_length=254, help_text="The address, e.g. alice@gmail.com.")
    name = BoundedCharField(
        max_length=100, required=False, default="", allow_blank=True, help_text="Display name."
    )
    server = OwnedField(
        EmailServer,
        required=False,
        allow_null=True,
        default=None,
        help_text="Only this server may send from it (default: every server of the account).",
    )


class ConfirmSerializer(serializers.Serializer[Any]):
    token = BoundedCharField(max_length=100, help_text="The `token` of the mailed link.")


def _identity(identity: SenderIdentity) -> dict[str, Any]:
    return dict(SenderIdentitySerializer(identity).data)


class SenderIdentityListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(responses=SenderIdentitySerializer(many=True))
    def get(self, request: Request) -> Response:
        identities = sender_identity_list(organization=organization_of(request))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(identities, request, view=self) or []
        return paginator.get_paginated_response([_identity(i) for i in page])

    @extend_schema(
        request=SenderIdentityCreateSerializer,
        responses={201: SenderIdentitySerializer, 403: LIMIT_REACHED, 409: CONFLICT},
        description="Adds the address and mails it a confirmation link (valid 48 hours); "
        "an address of a verified domain of the account is verified at once.",
    )
    def post(self, request: Request) -> Response:
        org = organization_of(request)
        serializer = SenderIdentityCreateSerializer(
            data=request.data, context={"organization": org}
        )
        serializer.is_valid(raise_exception=True)
        identity, _ = sender_identity_create(organization=org, **serializer.validated_data)
        return Response(_identity(identity), status=status.HTTP_201_CREATED)


class SenderIdentityDetailView(APIView):
    @extend_schema(responses=SenderIdentitySerializer)
    def get(self, request: Request, pk: int) -> Response:
        identity = sender_identity_get(organization=organization_of(request), identity_id=pk)
        return Response(_identity(identity))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        sender_identity_delete(organization=organization_of(request), identity_id=pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SenderIdentityResendView(APIView):
    @extend_schema(
        request=None,
        responses={
            200: SenderIdentitySerializer,
            403: error("Too many confirmation messages for this account in 24 hours."),
            409: error("The identity is verified already."),
            429: error("A link was sent less than a minute ago (`details.retry_after`)."),
        },
        description="Mails a new link; the previous one stops working.",
    )
    def post(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        sender_identity_resend(organization=org, identity_id=pk)
        return Response(_identity(sender_identity_get(organization=org, identity_id=pk)))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="robots" content="noindex"></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto">
<h1>{title}</h1>{body}</body></html>
"""


def _page(title: str, body: str, status_code: int = 200) -> HttpResponse:
    return HttpResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status=status_code,
        content_type="text/html; charset=utf-8",
    )


def _refused_page(exc: DomainError) -> HttpResponse:
    return _page(
        "This link does not work",
        f"<p>{html.escape(exc.message)}</p><p>Ask the account to resend the confirmation.</p>",
        exc.http_status,
    )


_HTML = OpenApiResponse(OpenApiTypes.STR, description="A page for a person.")
_BAD_TOKEN = error("The token is missing, malformed, unknown, used or expired (`details.token`).")


class _JsonOrPage(BaseContentNegotiation):
    """JSON whatever the Accept header says (DRF would answer a browser 406): the view
    answers its pages itself, as HttpResponses."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return (renderers[0], renderers[0].media_type)


def _wants_page(request: Request) -> bool:
    return "text/html" in request.META.get("HTTP_ACCEPT", "")


class SenderIdentityConfirmView(APIView):
    """The link mailed to the address. No key: the token is the credential."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes = [BoundedJSONParser, FormParser]
    content_negotiation_class = _JsonOrPage

    def error_page(self, request: Request, exc: DomainError) -> HttpResponse | None:
        """A browser (the link, the page's button) is answered a page; API clients JSON."""
        return _refused_page(exc) if _wants_page(request) else None

    @extend_schema(
        operation_id="sender_identities_confirm_page",
        parameters=[OpenApiParameter("token", str, required=True, description="From the link.")],
        responses={
            (200, "text/html"): _HTML,
            (400, "application/json"): _BAD_TOKEN,
            (400, "text/html"): _HTML,
        },
        description="The page the link opens: names the address, and a button POSTs the "
        "token. Changes nothing (mail scanners fetch links).",
    )
    def get(self, request: Request) -> HttpResponse:
        identity = sender_identity_pending(token=request.query_params.get("token"))
        token = html.escape(str(request.query_params["token"]))
        return _page(
            "Confirm your sender address",
            f"<p>Allow the Mailplane account <b>{html.escape(identity.organization.name)}</b> "
            f"to send email as <b>{html.escape(identity.address)}</b>?</p>"
            f'<form method="post" action="{CONFIRM_PATH}">'
            f'<input type="hidden" name="token" value="{token}">'
            '<button type="submit">Confirm</button></form>',
        )

    @extend_schema(
        operation_id="sender_identities_confirm",
        request=ConfirmSerializer,
        responses={
            (200, "application/json"): SenderIdentitySerializer,
            (200, "text/html"): _HTML,
            (400, "application/json"): _BAD_TOKEN,
            (400, "text/html"): _HTML,
        },
        description="Confirms the identity the token was mailed for (once). A browser's form "
        "post (the page's button) is answered a page; any other client JSON.",
    )
    def post(self, request: Request) -> Response | HttpResponse:
        form = _wants_page(request)
        try:
            serializer = ConfirmSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
        except serializers.ValidationError:
            if form:
                return _page("This link does not work", "<p>No token was given.</p>", 400)
            raise
        identity = sender_identity_confirm(token=serializer.validated_data["token"])
        if form:
            return _page(
                "Address confirmed",
                f"<p>{html.escape(identity.address)} may now be used as a sender. "
                "You can close this page.</p>",
            )
        return Response(_identity(identity))
