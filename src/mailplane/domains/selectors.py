"""Reads for domains."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from mailplane.core.errors import NotFound
from mailplane.domains.models import Domain, VerificationState
from mailplane.tenancy.models import Organization

# A new domain is re-checked while its owner is likely still editing DNS; after that, only
# on request (API, CLI), so abandoned domains do not cost a lookup every few minutes.
RECHECK_WINDOW = timedelta(hours=48)
RECHECK_AFTER = timedelta(minutes=10)


def domain_list_due_for_check(
    *,
    now: datetime | None = None,
    window: timedelta = RECHECK_WINDOW,
    stale_after: timedelta = RECHECK_AFTER,
    limit: int = 500,
) -> list[int]:
    """Ids of pending domains created within `window` and not checked for `stale_after`."""
    now = now or timezone.now()
    due = (
        Domain.objects.filter(
            verification_state=VerificationState.DNS_PENDING, created_at__gte=now - window
        )
        .filter(Q(last_checked_at__isnull=True) | Q(last_checked_at__lt=now - stale_after))
        .order_by(F("last_checked_at").asc(nulls_first=True), "id")  # never checked first
        .values_list("id", flat=True)[:limit]
    )
    return list(due)


def domain_list(*, organization: Organization, project: int | None = None) -> QuerySet[Domain]:
    """The account's domains as the API shows them: with their records and the DNS-provider
    connection publishing them, fetched in three queries whatever the page size."""
    qs = (
        Domain.objects.filter(organization=organization)
        .select_related("dns_publication")
        .prefetch_related("dns_records")
    )
    if project is not None:
        qs = qs.filter(project_id=project)
    return qs


def domain_get(*, organization: Organization, domain_id: Any) -> Domain:
    """One of the account's domains, as `domain_list` has it; another account's is a 404."""
    domain = domain_list(organization=organization).filter(pk=domain_id).first()
    if domain is None:
        raise NotFound("domain not found")
    return domain
