"""Reads for projects."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from mailplane.core.errors import NotFound
from mailplane.projects.models import Project
from mailplane.tenancy.models import Organization


def project_list(*, organization: Organization) -> QuerySet[Project]:
    """The account's projects, oldest first, each with `mailbox_count` and `domain_count`
    (counted in the one query, not one query per project and count)."""
    return (
        Project.objects.filter(organization=organization)
        .annotate(
            mailbox_count=Count("mailboxes", distinct=True),
            domain_count=Count("domains", distinct=True),
        )
        .order_by("id")
    )


def project_get(*, organization: Organization, project_id: Any) -> Project:
    """One of the account's projects, as `project_list` has it; another account's is a 404."""
    project = project_list(organization=organization).filter(pk=project_id).first()
    if project is None:
        raise NotFound("project not found")
    return project
