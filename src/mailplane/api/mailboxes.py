"""/api/mailboxes/: asynchronous create, list, retrieve, update, delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import optional_int_param
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.core.errors import ValidationFailed
from mailplane.mailboxes.selectors import mailbox_row, mailbox_rows
from mailplane.mailboxes.services import (
    mailbox_create_start,
    mailbox_delete,
    mailbox_get,
    mailbox_update,
    mailbox_validate,
)
from mailplane.tenancy.selectors import organization_mail_hosts


def mailbox_representation(row: Mapping[str, Any], hosts: tuple[str, str]) -> dict[str, Any]:
    """Field names follow the service's API reference (see shared/reference/api.md)."""
    conf = settings.MAILPLANE
    return {
        "id": row["id"],
        "email": row["address"],
        "local_part": row["local_part"],
        "password": row["password"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "domain": row["domain_id"],
        "domain_name": row["domain_name"],
        "relay_server": row["relay_server_id"],
        "email_server": row["relay_server_id"],
        "project": row["project_id"],
        "reply_to": row["reply_to"] or None,
        "status": row["status"],
        "daily_limit": row["daily_limit"],
        "sent_this_cycle": row["sent_this_cycle"],
        "warmup_active": row["warmup_enabled"],
        "warmup_per_day": row["warmup_per_day"],
        "warmup_daily_rampup": row["warmup_daily_rampup"],
        # Rates stay null until the delivery engine has measured something.
        "open_rate": None,
        "reply_rate": None,
        "bounce_rate": None,
        "spam_complaints": 0,
        "health": "active" if row["status"] == "active" else row["status"],
        "glock_test_reports": [],
        "signature": row["signature"],
        "smtp_host": hosts[0],
        "smtp_port": conf["SMTP_PORT"],
        "imap_host": hosts[1],
        "imap_port": conf["IMAP_PORT"],
        "created_at": row["created_at"],
    }


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationFailed.on("non_field_errors", "expected a JSON object")
    return dict(request.data.items())


class MailboxListView(APIView):
    def get(self, request: Request) -> Response:
        org = organization_of(request)
        qs = mailbox_rows(
            organization=org,
            project=optional_int_param(request, "project"),
            domain=optional_int_param(request, "domain"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        hosts = organization_mail_hosts(organization=org)
        return paginator.get_paginated_response([mailbox_representation(m, hosts) for m in page])

    def post(self, request: Request) -> Response:
        org = organization_of(request)
        spec = mailbox_validate(organization=org, data=_body(request))
        job = mailbox_create_start(organization=org, spec=spec)
        return Response(
            {"task_id": str(job.pk), "status": job.status}, status=status.HTTP_202_ACCEPTED
        )


class MailboxDetailView(APIView):
    def get(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        mailbox = mailbox_get(organization=org, mailbox_id=pk)
        return Response(
            mailbox_representation(mailbox_row(mailbox), organization_mail_hosts(organization=org))
        )

    def patch(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        mailbox = mailbox_update(
            mailbox=mailbox_get(organization=org, mailbox_id=pk), data=_body(request)
        )
        return Response(
            mailbox_representation(mailbox_row(mailbox), organization_mail_hosts(organization=org))
        )

    put = patch

    def delete(self, request: Request, pk: int) -> Response:
        mailbox_delete(mailbox=mailbox_get(organization=organization_of(request), mailbox_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
