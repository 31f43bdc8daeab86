"""How the OpenAPI schema at /api/schema/ describes the API (drf-spectacular).

Views declare their request and success bodies with `extend_schema` and serializers; this
module adds what every operation shares, so that no view can forget it:
- the `Api-Key` security scheme (an authentication extension for ApiKeyAuthentication);
- the error responses, all in the one error shape of api/errors.py: 401 and 429 where an
  API key is required, 404 where the path names an object, 400 where a body or query
  parameters are read, 413 and 415 where a body is read, 414 where a query is read
  (gunicorn's limit on the request line, answered in the same shape);
- the `Retry-After` header of a 429, and the `RateLimit-Policy` / `RateLimit` headers of
  every answer (api/ratelimits.py): every operation, public ones too, has a per-address
  quota.

Views add the errors only they can give (403 limits, 409 duplicates) in their own
`responses`; a code a view declares is never overwritten here.
"""

from __future__ import annotations

from typing import Any, Literal

import uritemplate
from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.response import Response

from mailplane.api.ratelimits import RATE_LIMITED_PATHS
from mailplane.jobs.models import Job, JobStatus


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """`Authorization: Api-Key <key>` (api/authentication.py), the seeds' scheme."""

    target_class = "mailplane.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`: a key from `mailplane org create` or "
            "`POST /api/api-keys/`.",
        }


class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(
        help_text="Machine-readable: validation_error, parse_error, not_found, conflict, "
        "limit_reached, not_allowed, not_authenticated, authentication_failed, throttled, "
        "body_too_large, file_too_large, …"
    )
    message = serializers.CharField(help_text="One sentence for a person.")
    details = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Each offending field, parameter or place in the body (`body`, `file`, "
        "`mailbox.names[2]`) mapped to its messages; `retry_after` on a 429.",
    )


class ErrorSerializer(serializers.Serializer[Any]):
    """Every 4xx and 5xx: `{"error": {"code", "message", "details"}}`."""

    error = ErrorBodySerializer()


class TaskStartedSerializer(serializers.Serializer[Any]):
    """202 of every asynchronous operation: poll `GET /api/tasks/{task_id}/`."""

    task_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=JobStatus.choices)


def task_started(job: Job) -> Response:
    """The 202 that TaskStartedSerializer describes, for the job a service started."""
    return Response({"task_id": str(job.pk), "status": job.status}, status=status.HTTP_202_ACCEPTED)


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


UNAUTHENTICATED = error("No API key, or a malformed, invalid or revoked one.")
THROTTLED = error(
    "Too many requests: this key's or this client address's quota for the window is spent "
    "(see `RateLimit`), or the address sent too many wrong API keys. `Retry-After` (and "
    "`details.retry_after`) says how many seconds to wait."
)
NOT_FOUND = error("No such object in this account (another account's ids are not found too).")
INVALID = error("Invalid input: `details` names each offending field or parameter.")
TOO_LARGE = error("The request body is over the limit (`details.body` or `details.file`).")
URI_TOO_LONG = error("The request line is over the web server's limit (query too long).")
UNSUPPORTED = error("The body's Content-Type is not one this operation reads.")
CONFLICT = error("A duplicate: the object already exists (`details` names the field).")
LIMIT_REACHED = error("The plan's limit is reached, or the plan does not allow this.")

RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before trying again (RFC 9110 §10.2.3).",
)
RATELIMIT_POLICY = OpenApiParameter(
    "RateLimit-Policy",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    response=True,
    description='The quotas that apply, e.g. `"key";q=12000;w=60, "ip";q=24000;w=60` '
    "(draft-ietf-httpapi-ratelimit-headers: q requests per w seconds).",
)
RATELIMIT = OpenApiParameter(
    "RateLimit",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    response=True,
    description='What is left of each quota, e.g. `"key";r=11999;t=42`: r requests in the '
    "next t seconds.",
)


_BLANK = {"type": "string", "maxLength": 0}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus the error responses every operation shares."""

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        if self.path.startswith(RATE_LIMITED_PATHS):
            parameters.extend([RETRY_AFTER, RATELIMIT_POLICY, RATELIMIT])
        return parameters

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        # A blank-allowed URL or email becomes `oneOf: [{format: uri}, {maxLength: 0}]`;
        # "" is valid under both branches for any validator that does not check formats
        # (JSON Schema's default), which makes "" invalid. `anyOf` says what is meant.
        super()._insert_field_validators(field, schema)
        if _BLANK in schema.get("oneOf", []):
            schema["anyOf"] = schema.pop("oneOf")

    def _get_response_bodies(
        self, direction: Literal["request", "response"] = "response"
    ) -> dict[str, Any]:
        # The one hook that sees every operation's responses: extend_schema replaces
        # get_response_serializers itself with the view's declared ones.
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code, response in self._shared_errors():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(
                    response, str(code), direction=direction
                )
        return responses

    def _requires_key(self) -> bool:
        auth = self.get_auth()
        return bool(auth) and {} not in auth

    def _shared_errors(self) -> list[tuple[int, OpenApiResponse]]:
        errors = []
        reads_body = (
            self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        )
        reads_query = self.method == "GET" and (
            self._is_list_view()
            or any(
                isinstance(p, OpenApiParameter) and p.location == OpenApiParameter.QUERY
                for p in self.get_override_parameters()
            )
        )
        if reads_body or reads_query:
            errors.append((400, INVALID))
        if self._requires_key():
            errors.append((401, UNAUTHENTICATED))
        if uritemplate.variables(self.path):
            errors.append((404, NOT_FOUND))
        if reads_body:
            errors.append((413, TOO_LARGE))
        if reads_query:
            errors.append((414, URI_TOO_LONG))
        if reads_body:
            errors.append((415, UNSUPPORTED))
        if self.path.startswith(RATE_LIMITED_PATHS):
            errors.append((429, THROTTLED))
        return errors


def integer_query_parameters_allow_empty(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every integer query parameter (`limit`, `offset`, `project`,
    `page`, …) is read by api/fields.py, which takes `?project=` as absent, so each one
    says `allowEmptyValue: true` (OpenAPI 3.0.3 §4.7.12)."""
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "query" and parameter["schema"].get("type") == "integer":
                    parameter["allowEmptyValue"] = True
    return result
