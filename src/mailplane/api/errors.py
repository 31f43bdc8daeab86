"""One error shape for every failure: {"error": {"code", "message", "details"}}.

Validation details map each offending field to its messages, so clients can point at
the field; unexpected exceptions become a 500 with the same shape and no traceback.
Django's refusals of a request (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many form
fields, a bad Host header) are 413 or 400 in this shape too, inside DRF views (the
exception handler) and outside them (handler400).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from mailplane.api.parsers import body_too_large
from mailplane.core.errors import DomainError, ValidationFailed

log = logging.getLogger(__name__)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {str(k): _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_flatten(v) if isinstance(v, dict | list) else str(v) for v in detail]
    return [str(detail)]


class RequestRefused(ValidationFailed):
    """A request Django refused (bad Host header, too many fields): bad input, 400."""

    code = "bad_request"


def _refused_request(exc: SuspiciousOperation) -> DomainError:
    """What Django refused about the request itself, as the error a client can act on."""
    if isinstance(exc, RequestDataTooBig):
        return body_too_large(int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    message = str(exc) or "the request was refused"
    return RequestRefused(message, details={"request": [message]})


def domain_error_response(exc: DomainError) -> Response:
    """The one rendering of a domain error over HTTP: its status, body and header fields."""
    return Response(exc.http_body(), status=exc.http_status, headers=exc.http_headers())


def domain_error_json(exc: DomainError) -> JsonResponse:
    """The same rendering outside DRF: plain Django views and middleware."""
    response = JsonResponse(exc.http_body(), status=exc.http_status)
    for name, value in exc.http_headers().items():
        response[name] = value
    return response


def domain_errors_rendered(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For a plain Django view: what DRF's exception handler does for an APIView, so the
    view raises domain errors like any other and never builds an error answer."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except DomainError as exc:
            return domain_error_json(exc)

    return wrapped


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    if isinstance(exc, SuspiciousOperation):
        exc = _refused_request(exc)
    if isinstance(exc, DomainError):
        # A view a person opens in a browser (a confirmation link) may answer its refusals
        # as a page: `error_page(request, exc)` returns one, or None for the JSON shape.
        page = getattr(context.get("view"), "error_page", None)
        request = context.get("request")
        answer = page(request, exc) if page is not None and request is not None else None
        if answer is not None:
            return answer
        return domain_error_response(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        details = _flatten(exc.detail)
        if not isinstance(details, dict):
            details = {"non_field_errors": details}
        fields = ", ".join(details)
        return Response(
            error_body("validation_error", f"invalid input ({fields})", details),
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled error in %s", context.get("view").__class__.__name__)
        return Response(
            error_body("internal_error", "internal error; it has been logged"),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
    details = None
    if isinstance(exc, exceptions.Throttled) and "Retry-After" in response:
        details = {"retry_after": [str(response["Retry-After"])]}
    response.data = error_body(str(code), str(exc.detail), details)
    return response


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "no such endpoint"), status=404)


def bad_request_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler400: SuspiciousOperation raised outside a DRF view (middleware, body reads)."""
    if isinstance(exception, SuspiciousOperation):
        return domain_error_json(_refused_request(exception))
    return JsonResponse(error_body("bad_request", "bad request"), status=400)


def server_error_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        error_body("internal_error", "internal error; it has been logged"), status=500
    )
