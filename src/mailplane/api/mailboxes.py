"""/api/mailboxes/: asynchronous create, list, retrieve, update, delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mailplane.api.authentication import organization_of
from mailplane.api.fields import OwnedField, optional_int_param
from mailplane.api.pagination import LimitOffsetPagination
from mailplane.api.schema import CONFLICT, LIMIT_REACHED, TaskStartedSerializer, task_started
from mailplane.core.errors import ValidationFailed
from mailplane.mailboxes.models import Mailbox, MailboxStatus
from mailplane.mailboxes.passwords import password_problems
from mailplane.mailboxes.selectors import mailbox_get, mailbox_row, mailbox_rows
from mailplane.mailboxes.services import (
    mailbox_create_start,
    mailbox_delete,
    mailbox_update,
    mailbox_validate,
)
from mailplane.projects.models import Project
from mailplane.relays.models import RelayServer
from mailplane.tenancy.selectors import organization_mail_hosts

_PASSWORD_RULES = (
    "12-128 printable ASCII characters without spaces or `#`, with a lower-case letter, an "
    "upper-case letter, a digit and a symbol; not starting with `=`, `+`, `-` or `@`; not "
    "containing the local part or the address."
)


class MailboxSerializer(serializers.Serializer[Any]):
    """A mailbox as lists and details show it. Field names follow the compatible service's
    reference; `mailbox_representation` builds it (from plain rows, for speed) and the
    schema tests hold the two to the same fields."""

    id = serializers.IntegerField()
    email = serializers.EmailField(help_text="The full address: the SMTP and IMAP username.")
    local_part = serializers.CharField(help_text="The part before the @.")
    password = serializers.CharField(
        allow_null=True,
        help_text="The SMTP/IMAP password, as the compatible service shows it (the CSV "
        "exports carry it too). null when the operator set MAILPLANE_API_SHOW_PASSWORDS=false.",
    )
    first_name = serializers.CharField(allow_blank=True)
    last_name = serializers.CharField(allow_blank=True)
    domain = serializers.IntegerField(help_text="Domain id.")
    domain_name = serializers.CharField()
    relay_server = serializers.IntegerField(help_text="Relay server id its mail leaves by.")
    email_server = serializers.IntegerField(help_text="Same as `relay_server` (reference name).")
    project = serializers.IntegerField(allow_null=True, help_text="Project id, or null.")
    reply_to = serializers.EmailField(allow_null=True, help_text="Reply-To address, or null.")
    status = serializers.ChoiceField(
        choices=MailboxStatus.choices, help_text="`suspended` mailboxes cannot log in or send."
    )
    daily_limit = serializers.IntegerField(help_text="Messages a day it may send.")
    sent_this_cycle = serializers.IntegerField()
    warmup_active = serializers.BooleanField()
    warmup_per_day = serializers.IntegerField()
    warmup_daily_rampup = serializers.IntegerField()
    open_rate = serializers.FloatField(allow_null=True, help_text="null until measured.")
    reply_rate = serializers.FloatField(allow_null=True, help_text="null until measured.")
    bounce_rate = serializers.FloatField(allow_null=True, help_text="null until measured.")
    spam_complaints = serializers.IntegerField()
    health = serializers.CharField()
    glock_test_reports = serializers.ListField(
        child=serializers.DictField(), help_text="Inbox placement test results."
    )
    signature = serializers.CharField(allow_blank=True)
    smtp_host = serializers.CharField(help_text="As `ibx_smtp` in /api/userinfo/.")
    smtp_port = serializers.IntegerField(help_text="SMTP submission with implicit TLS.")
    imap_host = serializers.CharField(help_text="As `ibx_imap` in /api/userinfo/.")
    imap_port = serializers.IntegerField(help_text="IMAP with implicit TLS.")
    created_at = serializers.DateTimeField()


def _id_field(help_text: str, **kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, help_text=help_text, **kwargs)


@extend_schema_field({"type": "integer", "minimum": 1})
class _OwnedId(OwnedField):
    """An id of one of the account's own objects, described as the create body's ids."""


def _owned(model: type[Any], help_text: str, **kwargs: Any) -> OwnedField:
    return _OwnedId(model, help_text=help_text, **kwargs)


class MailboxCreateSerializer(serializers.Serializer[Any]):
    """The create body; a 400 names each bad field in `details`."""

    # The shape is checked here; `mailbox_validate`, which CSV rows go through too, checks
    # the rest (references, the domain, the password, the limit), all fields at once.

    email = serializers.CharField(
        help_text="The local part (`john.doe`) or the full address (`john.doe@acme.test`, "
        "whose domain must be `domain` when both are given). 1-64 characters of a-z, 0-9 "
        "and . _ + - (no leading, trailing or double dots); stored lower-case."
    )
    domain = _id_field(
        "Id of one of the account's verified domains. May be omitted when `email` is a "
        "full address: the domain is found by name.",
        required=False,
    )
    relay_server = _id_field(
        "Relay server id (default: the domain's).", required=False, allow_null=True
    )
    password = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text=f"Omit (or blank) to have one generated, returned once in the task "
        f"result. {_PASSWORD_RULES}",
    )
    project = _id_field("Project id.", required=False, allow_null=True)
    reply_to = serializers.EmailField(required=False, allow_blank=True, allow_null=True)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=100)


# What a fetched mailbox carries that cannot change: sending it back unchanged is allowed.
_FIXED = ("id", "email", "domain", "domain_name")


class MailboxUpdateSerializer(serializers.Serializer[Any]):
    """PATCH (or PUT) body: any of these. `email`, `domain` and `id` cannot change (sending
    them unchanged is allowed, so a fetched mailbox can be sent back)."""

    password = serializers.CharField(required=False, help_text=_PASSWORD_RULES)
    reply_to = serializers.EmailField(
        required=False, allow_blank=True, allow_null=True, help_text="null or blank clears it."
    )
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    project = _owned(Project, "Project id; null detaches it.", required=False, allow_null=True)
    relay_server = _owned(RelayServer, "Relay server id its mail leaves by.", required=False)
    status = serializers.ChoiceField(choices=MailboxStatus.choices, required=False)
    daily_limit = serializers.IntegerField(min_value=0, max_value=100_000, required=False)
    warmup_enabled = serializers.BooleanField(required=False)
    warmup_per_day = serializers.IntegerField(min_value=0, max_value=100_000, required=False)
    warmup_daily_rampup = serializers.IntegerField(min_value=0, max_value=100_000, required=False)
    signature = serializers.CharField(required=False, allow_blank=True, max_length=10_000)

    def validate_password(self, value: str) -> str:
        mailbox: Mailbox = self.context["mailbox"]
        problems = password_problems(value, local_part=mailbox.local_part, address=mailbox.address)
        if problems:
            raise serializers.ValidationError(problems)
        return value

    def validate_reply_to(self, value: str | None) -> str:
        return value or ""  # null clears it, as blank does

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        """The fields' own checks, and in the same 400: a field this body may not have
        (unknown, or one of `_FIXED` with another value than the mailbox's)."""
        if not isinstance(data, Mapping):
            raise ValidationFailed.on("non_field_errors", "expected a JSON object")
        errors: dict[str, Any] = {}
        values: dict[str, Any] = {}
        try:
            values = dict(super().to_internal_value(data))
        except serializers.ValidationError as exc:
            assert isinstance(exc.detail, dict)
            errors.update(exc.detail)
        mailbox: Mailbox = self.context["mailbox"]
        unchanged = (None, mailbox.pk, mailbox.address, mailbox.local_part, mailbox.domain_id)
        for name in sorted(set(data) - set(self.fields)):
            if name not in _FIXED:
                errors[name] = ["unknown field"]
            elif data[name] not in (*unchanged, mailbox.domain.name):
                errors[name] = ["cannot be changed: create a new mailbox instead"]
        if errors:
            raise serializers.ValidationError(errors)
        return values


def mailbox_representation(row: Mapping[str, Any], hosts: tuple[str, str]) -> dict[str, Any]:
    """Field names follow the service's API reference (see shared/reference/api.md)."""
    conf = settings.MAILPLANE
    return {
        "id": row["id"],
        "email": row["address"],
        "local_part": row["local_part"],
        "password": row["password"] if conf["API_SHOW_PASSWORDS"] else None,
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


def _no_store(response: Response) -> Response:
    response["Cache-Control"] = "no-store"  # mailboxes carry their passwords
    return response


class MailboxListView(APIView):
    pagination_class = LimitOffsetPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("project", int, description="Only this project's mailboxes."),
            OpenApiParameter("domain", int, description="Only this domain's mailboxes."),
        ],
        responses=MailboxSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        org = organization_of(request)
        qs = mailbox_rows(
            organization=org,
            project=optional_int_param(request, "project"),
            domain=optional_int_param(request, "domain"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        hosts = organization_mail_hosts(organization=org)
        return _no_store(
            paginator.get_paginated_response([mailbox_representation(m, hosts) for m in page])
        )

    @extend_schema(
        request=MailboxCreateSerializer,
        responses={202: TaskStartedSerializer, 403: LIMIT_REACHED, 409: CONFLICT},
        description="Create a mailbox in a task: poll `GET /api/tasks/{task_id}/`; its "
        "`mailbox` carries a generated password once. 409 when the address exists.",
    )
    def post(self, request: Request) -> Response:
        org = organization_of(request)
        body = MailboxCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        spec = mailbox_validate(organization=org, data=dict(body.validated_data))
        job = mailbox_create_start(organization=org, spec=spec)
        return task_started(job)


class MailboxDetailView(APIView):
    @extend_schema(responses=MailboxSerializer)
    def get(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        mailbox = mailbox_get(organization=org, mailbox_id=pk)
        return _no_store(
            Response(
                mailbox_representation(
                    mailbox_row(mailbox), organization_mail_hosts(organization=org)
                )
            )
        )

    @extend_schema(request=MailboxUpdateSerializer, responses=MailboxSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        org = organization_of(request)
        mailbox = mailbox_get(organization=org, mailbox_id=pk)
        body = MailboxUpdateSerializer(
            data=request.data, context={"organization": org, "mailbox": mailbox}
        )
        body.is_valid(raise_exception=True)
        mailbox = mailbox_update(mailbox=mailbox, **body.validated_data)
        return _no_store(
            Response(
                mailbox_representation(
                    mailbox_row(mailbox), organization_mail_hosts(organization=org)
                )
            )
        )

    put = patch  # every field is optional either way

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        mailbox_delete(mailbox=mailbox_get(organization=organization_of(request), mailbox_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
