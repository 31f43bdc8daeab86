"""/unsubscribe/<token>/: the link in a broadcast message's List-Unsubscribe field.

POST is RFC 8058's one-click unsubscribe: the mailbox provider posts
`List-Unsubscribe=One-Click` (application/x-www-form-urlencoded or multipart/form-data,
§3.1) with no cookie, no key and no CSRF token (there can be none: the request does not
come from a page of ours), and the address is suppressed for the message's stream at
once. GET is the confirmation page a person sees who opens the link: it changes nothing
(RFC 8058 §1: link scanners and prefetchers GET every URI of a message) and its button
posts the same form. Both answer HTML to a browser (Accept: text/html) and JSON to
anything else. The token is the only credential (sending/unsubscribe.py): a malformed,
unknown or expired one is a 404, a replay the same 200 as the first time.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from django.utils.html import format_html
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer, StaticHTMLRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.parsers import body_too_large, declared_length
from mailplane.api.schema import error
from mailplane.core.errors import ValidationFailed
from mailplane.message.unsubscribe import ONE_CLICK
from mailplane.sending.unsubscribe import unsubscribe_apply, unsubscribe_check

BODY_MAX = 1024  # `List-Unsubscribe=One-Click` is 26 bytes; a multipart wrapping, ~200
FIELD, VALUE = ONE_CLICK.split("=")


class OneClickFormParser(BaseParser):
    """application/x-www-form-urlencoded, at most BODY_MAX bytes, read before parsing."""

    media_type = "application/x-www-form-urlencoded"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        if request is not None and declared_length(request) > BODY_MAX:
            raise body_too_large(BODY_MAX)
        raw = stream.read(BODY_MAX + 1) if stream is not None else b""
        if len(raw) > BODY_MAX:
            raise body_too_large(BODY_MAX)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


class OneClickMultiPartParser(MultiPartParser):
    """multipart/form-data (RFC 8058 allows it), within the same size."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        if request is not None and declared_length(request) > BODY_MAX:
            raise body_too_large(BODY_MAX)
        return super().parse(stream, media_type, parser_context)


class PageRenderer(StaticHTMLRenderer):
    """A short HTML page for people; errors as a page too, never a template lookup."""

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> Any:
        response = (renderer_context or {}).get("response")
        if isinstance(data, dict):  # an error body (api/errors.py) or a result
            message = (data.get("error") or {}).get("message") or data.get("message", "")
            title = "Unsubscribe link" if response and response.exception else "Unsubscribed"
            data = _page(title, str(message))
        return data.encode() if isinstance(data, str) else data


def _page(title: str, text: str, form: bool = False) -> str:
    button = format_html(
        '<form method="post"><input type="hidden" name="{}" value="{}">'
        '<button type="submit">Unsubscribe</button></form>',
        FIELD,
        VALUE,
    )
    return format_html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="robots" content="noindex"><title>{}</title></head>'
        "<body><h1>{}</h1><p>{}</p>{}</body></html>",
        title,
        title,
        text,
        button if form else "",
    )


class OneClickSerializer(serializers.Serializer[Any]):
    """RFC 8058 §3.1's body; the field name has a hyphen (declared below)."""


OneClickSerializer._declared_fields[FIELD] = serializers.ChoiceField(
    choices=[VALUE], help_text=f"Always `{VALUE}` (RFC 8058 §3.1)."
)


class UnsubscribedSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["unsubscribed"])
    stream = serializers.CharField(help_text="The stream's name: its mail stops.")
    message = serializers.CharField()


class ConfirmSerializer(serializers.Serializer[Any]):
    stream = serializers.CharField()
    message = serializers.CharField()


_NOT_FOUND = error("No such link: malformed, unknown, or its message has expired.")


class UnsubscribeView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    parser_classes = (OneClickFormParser, OneClickMultiPartParser)
    renderer_classes = (JSONRenderer, PageRenderer)

    def _html(self, request: Request) -> bool:
        return isinstance(request.accepted_renderer, PageRenderer)

    @extend_schema(
        operation_id="unsubscribe_confirm",
        auth=[],
        responses={200: OpenApiResponse(ConfirmSerializer), 404: _NOT_FOUND},
        description="The confirmation page of a List-Unsubscribe link: changes nothing; "
        "its button posts the one-click form.",
    )
    def get(self, request: Request, token: str) -> Response:
        stream = unsubscribe_check(token=token)
        text = f"Stop receiving “{stream}”?"
        if self._html(request):
            return Response(_page("Unsubscribe", text, form=True))
        return Response({"stream": stream, "message": text})

    @extend_schema(
        operation_id="unsubscribe_one_click",
        auth=[],
        request={
            "application/x-www-form-urlencoded": OneClickSerializer,
            "multipart/form-data": OneClickSerializer,
        },
        responses={200: OpenApiResponse(UnsubscribedSerializer), 404: _NOT_FOUND},
        description="RFC 8058 one-click unsubscribe: the address the link was sent to is "
        "suppressed for the message's stream (an `unsubscribed` event). Idempotent.",
    )
    def post(self, request: Request, token: str) -> Response:
        data = request.data
        if not isinstance(data, dict) or data.get(FIELD) != VALUE:
            raise ValidationFailed.on(FIELD, f"the body must be `{ONE_CLICK}` (RFC 8058 §3.1)")
        how = "confirmation page" if self._html(request) else "one-click"
        done = unsubscribe_apply(token=token, how=how)
        text = f"You will no longer receive “{done.stream_name}”."
        if self._html(request):
            return Response(_page("Unsubscribed", text))
        return Response({"status": "unsubscribed", "stream": done.stream_name, "message": text})
