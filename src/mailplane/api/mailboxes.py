"""/api/mailboxes/: asynchronous create, list, retrieve, update, delete."""

from __future__ import annotations

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
from mailplane.mailboxes.models import Mailbox
from mailplane.mailboxes.selectors import mailbox_list
from mailplane.mailboxes.services import (
    mailbox_create_start,
    mailbox_delete,
    mailbox_get,
    mailbox_update,
    mailbox_validate,
)
from mailplane.tenancy.selectors import organization_mail_hosts


def mailbox_representation(mailbox: Mailbox, hosts: tuple[str, str]) -> dict[str, Any]:
    """Field names follow the service's API reference (see shared/reference/api.md)."""
    conf = settings.MAILPLANE
    return {
        "id": mailbox.pk,
        "email": mailbox.address,
        "local_part": mailbox.local_part,
        "password": mailbox.password,
        "first_name": mailbox.first_name,
        "last_name": mailbox.last_name,
        "domain": mailbox.domain_id,
        "domain_name": mailbox.domain.name,
        "relay_server": mailbox.relay_server_id,
        "email_server": mailbox.relay_server_id,
        "project": mailbox.project_id,
        "reply_to": mailbox.reply_to or None,
        "status": mailbox.status,
        "daily_limit": mailbox.daily_limit,
        "sent_this_cycle": mailbox.sent_this_cycle,
        "warmup_active": mailbox.warmup_enabled,
        "warmup_per_day": mailbox.warmup_per_day,
        "warmup_daily_rampup": mailbox.warmup_daily_rampup,
        # Rates stay null until the delivery engine has measured something.
        "open_rate": None,
        "reply_rate": None,
        "bounce_rate": None,
        "spam_complaints": 0,
        "health": "active" if mailbox.status == "active" else mailbox.status,
        "glock_test_reports": [],
        "signature": mailbox.signature,
        "smtp_host": hosts[0],
        "smtp_port": conf["SMTP_PORT"],
        "imap_host": hosts[1],
        "imap_port": conf["IMAP_PORT"],
        "created_at": mailbox.created_at,
    }


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationFailed.on("non_field_errors", "expected a JSON object")
    return dict(request.data.items())


class MailboxListView(APIView):
    def get(self, request: Request) -> Response:
        org = organization_of(request)
        qs = mailbox_list(
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
        return Response(mailbox_representation(mailbox, organization_mail_hosts(organization=org)))

    def patch(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        mailbox = mailbox_update(
            mailbox=mailbox_get(organization=org, mailbox_id=pk), data=_body(request)
        )
        return Response(mailbox_representation(mailbox, organization_mail_hosts(organization=org)))

    put = patch

    def delete(self, request: Request, pk: int) -> Response:
        mailbox_delete(mailbox=mailbox_get(organization=organization_of(request), mailbox_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
