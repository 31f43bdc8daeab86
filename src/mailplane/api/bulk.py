"""POST /api/mailboxes/bulk/: a CSV of mailboxes in, one task id out.

The file arrives as multipart (`file` field) or as a raw `text/csv` body. Its size is
checked before it is read into memory; everything else about the file is the service's
business (mailplane.mailboxes.bulk).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.parsers import declared_length
from mailplane.api.schema import TaskStartedSerializer, task_started
from mailplane.core.errors import ValidationFailed
from mailplane.mailboxes.bulk import mailbox_bulk_start, max_bytes, upload_too_large

# Multipart boundaries and part headers around the file itself.
_MULTIPART_SLACK = 64 * 1024


class RawCsvParser(BaseParser):
    """A raw CSV body: hand the bytes over untouched (decoding is the service's check)."""

    media_type = "text/csv"

    # DRF takes any value as request.data; its stubs say a mapping.
    def parse(  # type: ignore[override]
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> bytes:
        if stream is None:
            return b""
        # Read one byte past the limit: enough to know it is too big, no more.
        return bytes(stream.read(max_bytes() + 1))


class RawTextParser(RawCsvParser):
    media_type = "text/plain"


class RawOctetParser(RawCsvParser):
    media_type = "application/octet-stream"


class BulkUploadSerializer(serializers.Serializer[Any]):
    file = serializers.FileField(
        help_text="The CSV: header row `email,domain` and optionally `relay_server,"
        "password,project,reply_to,first_name,last_name`."
    )


class MailboxBulkCreateView(APIView):
    parser_classes = [MultiPartParser, RawCsvParser, RawTextParser, RawOctetParser]

    @extend_schema(
        request={
            "multipart/form-data": BulkUploadSerializer,
            "text/csv": OpenApiTypes.STR,
            "text/plain": OpenApiTypes.STR,
            "application/octet-stream": OpenApiTypes.BINARY,
        },
        responses={202: TaskStartedSerializer},
        description="Create mailboxes from a CSV in one task; each row's outcome is in the "
        "task's `result.rows`. A file that cannot be read as a whole is a 400 (413 when "
        "too large) naming the problem in `details.file`.",
    )
    def post(self, request: Request) -> Response:
        org = organization_of(request)
        job = mailbox_bulk_start(organization=org, content=_upload(request))
        return task_started(job)


def _upload(request: Request) -> bytes:
    limit = max_bytes()
    declared = declared_length(request)
    if declared > limit + _MULTIPART_SLACK:
        raise upload_too_large(declared)
    try:
        data = request.data
    except RequestDataTooBig as exc:
        raise upload_too_large(declared) from exc
    if isinstance(data, bytes):
        return data
    if not request.content_type.startswith("multipart/"):
        return b""  # a raw CSV request with no body at all: the service calls it empty
    upload = request.FILES.get("file")
    if upload is None:
        raise ValidationFailed.on(
            "file",
            "this field is required: send the CSV as multipart field 'file' or as a text/csv body",
        )
    if upload.size is not None and upload.size > limit:
        raise upload_too_large(upload.size)
    return bytes(upload.read())
