"""Reads for relay servers."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from mailplane.core.errors import NotFound
from mailplane.relays.models import RelayServer
from mailplane.tenancy.models import Organization


def relay_server_list(*, organization: Organization) -> QuerySet[RelayServer]:
    """The servers assigned to the account, oldest first."""
    return RelayServer.objects.filter(organization=organization).order_by("id")


def relay_server_get(*, organization: Organization, server_id: Any) -> RelayServer:
    """One of the account's servers; another account's (or the operator's) is a 404."""
    server = RelayServer.objects.filter(organization=organization, pk=server_id).first()
    if server is None:
        raise NotFound("relay server not found")
    return server
