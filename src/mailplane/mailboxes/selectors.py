"""Reads about mailboxes."""

from __future__ import annotations

from typing import Any

from django.db.models import F, QuerySet

from mailplane.core.errors import NotFound
from mailplane.mailboxes.models import Mailbox
from mailplane.tenancy.models import Organization


def mailbox_list(
    *, organization: Organization, project: int | None = None, domain: int | None = None
) -> QuerySet[Mailbox]:
    # Only the domain's name is wanted: its DKIM key columns would cost a decryption per row.
    qs = (
        Mailbox.objects.filter(organization=organization)
        .select_related("domain")
        .defer("domain__dkim_private_key", "domain__dkim_public_key")
    )
    if project is not None:
        qs = qs.filter(project_id=project)
    if domain is not None:
        qs = qs.filter(domain_id=domain)
    return qs.order_by("id")


# What the API shows of a mailbox: plain columns, plus the domain's name.
ROW_FIELDS = (
    "id",
    "address",
    "local_part",
    "password",
    "first_name",
    "last_name",
    "domain_id",
    "relay_server_id",
    "project_id",
    "reply_to",
    "status",
    "daily_limit",
    "sent_this_cycle",
    "warmup_enabled",
    "warmup_per_day",
    "warmup_daily_rampup",
    "signature",
    "created_at",
)


def mailbox_rows(
    *, organization: Organization, project: int | None = None, domain: int | None = None
) -> QuerySet[Mailbox, dict[str, Any]]:
    """The list as plain rows: a page of model objects (with their joined domains) cost
    more CPU than the queries themselves (see bench/RESULTS.md)."""
    qs = Mailbox.objects.filter(organization=organization)
    if project is not None:
        qs = qs.filter(project_id=project)
    if domain is not None:
        qs = qs.filter(domain_id=domain)
    return qs.order_by("id").values(*ROW_FIELDS, domain_name=F("domain__name"))


def mailbox_row(mailbox: Mailbox) -> dict[str, Any]:
    """One mailbox in the shape of `mailbox_rows`, for the detail views."""
    return {
        **{name: getattr(mailbox, name) for name in ROW_FIELDS},
        "domain_name": mailbox.domain.name,
    }


def mailbox_summary(*, mailbox: Mailbox) -> dict[str, Any]:
    """The mailbox as a task result carries it (JSON-ready, no password: the task view adds
    a generated one, once). `reply_to` is null when unset, as in the mailbox's list."""
    return {
        "id": mailbox.pk,
        "email": mailbox.address,
        "domain": mailbox.domain_id,
        "relay_server": mailbox.relay_server_id,
        "project": mailbox.project_id,
        "reply_to": mailbox.reply_to or None,
    }


def mailbox_get(*, organization: Organization, mailbox_id: Any) -> Mailbox:
    """One of the account's mailboxes, with its domain; another account's is a 404."""
    mailbox = (
        Mailbox.objects.select_related("domain")
        .filter(organization=organization, pk=mailbox_id)
        .first()
    )
    if mailbox is None:
        raise NotFound("mailbox not found")
    return mailbox
