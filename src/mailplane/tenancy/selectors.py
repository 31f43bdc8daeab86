"""Reads about tenants."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from mailplane.tenancy.models import ApiKey, Organization


def organization_mail_hosts(*, organization: Organization) -> tuple[str, str]:
    """(smtp host, imap host) this account's clients must use: the operator's per-account
    names (`mailplane org set-hosts`) first, then its cell's (`mailplane cell create
    --host`), then the shared ones."""
    from mailplane.cells.selectors import organization_cell_hosts

    conf = settings.MAILPLANE
    cell_smtp, cell_imap = organization_cell_hosts(organization=organization) or ("", "")
    return (
        organization.dedicated_smtp_host or cell_smtp or str(conf["SHARED_SMTP_HOST"]),
        organization.dedicated_imap_host or cell_imap or str(conf["SHARED_IMAP_HOST"]),
    )


def organization_userinfo(*, organization: Organization) -> dict[str, Any]:
    """The account behind a key, its plan, where its mail clients connect and what it
    holds: `GET /api/userinfo/` (field names are the compatible service's)."""
    owner = organization.owner
    smtp_host, imap_host = organization_mail_hosts(organization=organization)
    conf = settings.MAILPLANE
    return {
        "id": owner.pk,
        "username": owner.get_username(),
        "email": owner.email,
        "first_name": owner.first_name,
        "last_name": owner.last_name,
        "organization": {
            "id": organization.pk,
            "name": organization.name,
            "slug": organization.slug,
        },
        "plan": organization.plan,
        "api_sending": organization.plan_limits.api_sending,
        "single_tenant": organization.cell != "shared"
        or bool(organization.dedicated_smtp_host or organization.dedicated_imap_host),
        "ibx_smtp": smtp_host,
        "ibx_imap": imap_host,
        "smtp_port": conf["SMTP_PORT"],
        "submission_port": conf["SUBMISSION_PORT"],
        "imap_port": conf["IMAP_PORT"],
        "mailboxes": organization.mailboxes.count(),
        "mailboxes_limit": organization.mailboxes_limit,
        "domains": organization.domains.count(),
        "projects": organization.projects.count(),
        "relay_servers": organization.relay_servers.count(),
        "relay_servers_limit": organization.relay_servers_limit,
    }


def api_key_list(*, organization: Organization) -> QuerySet[ApiKey]:
    """The account's keys, revoked ones included (they show when), oldest first."""
    return ApiKey.objects.filter(organization=organization).order_by("id")
