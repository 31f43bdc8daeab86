"""Reads of the reputation's account-visible state."""

from __future__ import annotations

from django.db.models import QuerySet

from mailplane.reputation.models import ReputationNotice
from mailplane.tenancy.models import Organization


def reputation_notice_list(*, organization: Organization) -> QuerySet[ReputationNotice]:
    """The account's notices, newest first."""
    return ReputationNotice.objects.filter(organization=organization).order_by("-id")
