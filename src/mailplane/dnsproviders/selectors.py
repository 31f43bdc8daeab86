"""Reads for DNS-provider connections."""

from __future__ import annotations

from django.db.models import QuerySet

from mailplane.dnsproviders.models import DnsProviderConnection
from mailplane.tenancy.models import Organization


def dns_provider_list(*, organization: Organization) -> QuerySet[DnsProviderConnection]:
    """The account's connections with the domains each publishes (one query for those)."""
    return DnsProviderConnection.objects.filter(organization=organization).prefetch_related(
        "publications"
    )
