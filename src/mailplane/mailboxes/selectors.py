"""Reads about mailboxes."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

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


def mailbox_summary(*, mailbox: Mailbox) -> dict[str, Any]:
    """The mailbox as a task result carries it (JSON-ready, no password)."""
    return {
        "id": mailbox.pk,
        "email": mailbox.address,
        "domain": mailbox.domain_id,
        "relay_server": mailbox.relay_server_id,
        "project": mailbox.project_id,
        "reply_to": mailbox.reply_to,
    }
