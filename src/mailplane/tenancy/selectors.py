"""Reads about tenants."""

from __future__ import annotations

from django.conf import settings

from mailplane.tenancy.models import Organization


def organization_mail_hosts(*, organization: Organization) -> tuple[str, str]:
    """(smtp host, imap host) this account's clients must use: dedicated once migrated."""
    conf = settings.MAILPLANE
    return (
        organization.dedicated_smtp_host or str(conf["SHARED_SMTP_HOST"]),
        organization.dedicated_imap_host or str(conf["SHARED_IMAP_HOST"]),
    )
