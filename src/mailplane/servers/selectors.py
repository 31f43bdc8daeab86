"""Reads for email servers, always scoped to one account (another's ids are not found)."""

from __future__ import annotations

from django.db.models import QuerySet

from mailplane.core.errors import NotFound
from mailplane.servers.models import EmailServer, ServerKey
from mailplane.tenancy.models import Organization


def email_server_list(*, organization: Organization) -> QuerySet[EmailServer]:
    return (
        EmailServer.objects.filter(organization=organization)
        .select_related("default_stream")
        .prefetch_related("streams")
        .order_by("id")
    )


def email_server_get(*, organization: Organization, server_id: int) -> EmailServer:
    server = email_server_list(organization=organization).filter(pk=server_id).first()
    if server is None:
        raise NotFound("server not found")
    return server


def server_key_list(*, server: EmailServer) -> QuerySet[ServerKey]:
    return ServerKey.objects.filter(server=server).order_by("id")
