"""Writes for projects."""

from __future__ import annotations

from django.db import IntegrityError

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import Conflict
from mailplane.projects.models import Project
from mailplane.tenancy.models import Organization


def _name_taken() -> Conflict:
    message = "a project with this name exists"
    return Conflict(message, details={"name": [message]})


def project_create(*, organization: Organization, name: str, description: str = "") -> Project:
    """A new project; a name the account uses already is a Conflict (409)."""
    try:
        # A savepoint: the failed INSERT must not spoil an enclosing transaction.
        with data_atomic():
            return Project.objects.create(
                organization=organization, name=name, description=description
            )
    except IntegrityError as exc:  # the database enforces one name per account
        raise _name_taken() from exc


def project_update(
    *, project: Project, name: str | None = None, description: str | None = None
) -> Project:
    """Rename or redescribe; None leaves a field as it is."""
    if name is not None:
        project.name = name
    if description is not None:
        project.description = description
    try:
        with data_atomic():
            project.save(update_fields=["name", "description"])
    except IntegrityError as exc:
        raise _name_taken() from exc
    return project


def project_delete(*, project: Project) -> None:
    """Delete; its mailboxes and domains stay, detached (the foreign keys SET_NULL)."""
    project.delete()
