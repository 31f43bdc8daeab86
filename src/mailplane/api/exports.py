"""GET /mailbox/download/{layout}/: the caller's mailboxes as an outreach tool's CSV."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import optional_int_param
from mailplane.exports.layouts import LAYOUTS
from mailplane.exports.selectors import export_build

_CSV = OpenApiResponse(
    OpenApiTypes.STR,
    description="The CSV (a zip of CSV parts when the layout splits files and no `page` "
    "is asked for). `X-Mailplane-Parts` gives the number of parts, `X-Mailplane-Part` the "
    "part served.",
)


class MailboxExportView(APIView):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # A client asking for text/csv must still get JSON errors, not a 406.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("layout", str, OpenApiParameter.PATH, enum=sorted(LAYOUTS)),
            OpenApiParameter("project", int, description="Only this project's mailboxes."),
            OpenApiParameter("page", int, description="One part of a split export, from 1."),
        ],
        responses={
            (200, "text/csv"): _CSV,
            (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY),
        },
        description="The account's mailboxes, passwords included, as an outreach tool's "
        "CSV import. 404 for an unknown layout, project or page.",
    )
    def get(self, request: Request, layout: str) -> HttpResponse:
        export = export_build(
            organization=organization_of(request),
            layout_name=layout,
            project=optional_int_param(request, "project"),
            # Pages are numbered from 1; no account has a million parts of 200 accounts.
            page=optional_int_param(request, "page", maximum=1_000_000, noun="a page number"),
        )
        response = HttpResponse(export.content, content_type=export.content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        # How many files the whole export takes (Woodpecker imports 200 accounts a file).
        response["X-Mailplane-Parts"] = str(export.parts)
        if export.part is not None:
            response["X-Mailplane-Part"] = str(export.part)
        response["Cache-Control"] = "no-store"  # the files carry passwords
        return response
