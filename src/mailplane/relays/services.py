"""Writes for relay servers."""

from __future__ import annotations

from typing import Any

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import LimitReached, ValidationFailed
from mailplane.relays.models import RelayServer, RelayStatus
from mailplane.relays.schemas import validate_provider_config
from mailplane.tenancy.models import Organization


def relay_server_create(
    *,
    organization: Organization | None,
    name: str,
    provider: str,
    configuration: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
) -> RelayServer:
    """Operator action: create a server, optionally assigned to an account at once."""
    config, creds = validate_provider_config(provider, configuration or {}, credentials or {})
    server = RelayServer(name=name, provider=provider, configuration=config, credentials=creds)
    if organization is not None:
        relay_server_assign(server=server, organization=organization)
    else:
        server.save()
    return server


def relay_server_assign(*, server: RelayServer, organization: Organization) -> RelayServer:
    with data_atomic():
        limit = organization.relay_servers_limit
        count = RelayServer.objects.filter(organization=organization).exclude(pk=server.pk).count()
        # The native server every account gets does not count against the plan.
        if limit is not None and count >= limit + 1:
            raise LimitReached(f"plan {organization.plan} allows {limit} relay servers")
        server.organization = organization
        server.save()
    return server


def relay_server_update(
    *,
    server: RelayServer,
    name: str | None = None,
    configuration: dict[str, Any] | None = None,
    credentials: dict[str, Any] | None = None,
    status: str | None = None,
) -> RelayServer:
    """Customer action: settings replace per key; credentials merge (null removes one)."""
    merged_config = {**server.configuration, **(configuration or {})}
    merged_creds = {**server.credentials, **(credentials or {})}
    merged_config = {k: v for k, v in merged_config.items() if v is not None}
    merged_creds = {k: v for k, v in merged_creds.items() if v is not None}
    server.configuration, server.credentials = validate_provider_config(
        server.provider, merged_config, merged_creds
    )
    if name is not None:
        if not name.strip():
            raise ValidationFailed.on("name", "must not be blank")
        server.name = name
    if status is not None:
        if status not in RelayStatus.values:
            raise ValidationFailed.on("status", f"must be one of {', '.join(RelayStatus.values)}")
        server.status = status
    server.save()
    return server
