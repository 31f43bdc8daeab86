"""The operator's changes to pools (the CLI calls these): addresses and assignments."""

from __future__ import annotations

import ipaddress

from mailplane.cells.routing import data_atomic
from mailplane.core.errors import Conflict, NotFound, ValidationFailed
from mailplane.pools.models import IpPool, PoolAddress, PoolAssignment
from mailplane.pools.warmup import schedule_validate
from mailplane.relays.schemas import is_hostname
from mailplane.servers.models import EmailServer, MessageStream, ServerKey
from mailplane.tenancy.models import Organization


def pool_create(*, name: str, dedicated: bool = False) -> IpPool:
    if IpPool.objects.filter(name=name).exists():
        raise Conflict(f"pool {name} exists", details={"name": ["exists"]})
    return IpPool.objects.create(name=name, dedicated=dedicated)


def pool_address_add(
    *, pool: IpPool, address: str, helo_name: str, warmup: bool = False
) -> PoolAddress:
    """The address must be one this host can bind (the delivery worker binds it); the HELO
    name should be the address's PTR name (receivers compare them)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        raise ValidationFailed.on("address", f"{address!r} is not an IP address") from None
    helo = helo_name.strip().rstrip(".").lower()
    if is_hostname(helo) is not None:
        raise ValidationFailed.on("helo_name", f"{helo_name!r} is not a host name")
    existing = PoolAddress.objects.filter(address=str(ip)).select_related("pool").first()
    if existing is not None:
        raise Conflict(
            f"{ip} is in pool {existing.pool.name} already", details={"address": ["in use"]}
        )
    return PoolAddress.objects.create(
        pool=pool, address=str(ip), helo_name=helo, warmup_day=1 if warmup else 0
    )


def pool_schedule_set(*, pool: IpPool, schedule: object) -> IpPool:
    """The pool's own warm-up ramp ([] for the default one)."""
    try:
        pool.warmup_schedule = [] if schedule == [] else schedule_validate(schedule)
    except ValueError as exc:
        raise ValidationFailed.on("schedule", str(exc)) from None
    pool.save(update_fields=["warmup_schedule"])
    return pool


def pool_address_enable(*, address: str, enabled: bool) -> PoolAddress:
    row = PoolAddress.objects.filter(address=address).first()
    if row is None:
        raise NotFound(f"no pool has the address {address}")
    row.enabled = enabled
    row.save(update_fields=["enabled"])
    return row


def pool_assign(
    *,
    pool: IpPool,
    organization: Organization,
    server: EmailServer | None = None,
    stream: MessageStream | None = None,
    server_key: ServerKey | None = None,
) -> PoolAssignment:
    """Send this scope's mail from `pool` (replacing the scope's earlier pool, if any)."""
    if server_key is not None:
        server = server or server_key.server
        if server_key.server_id != server.pk:
            raise ValidationFailed.on("server_key", "is a key of another server")
    if stream is not None:
        server = server or stream.server
        if stream.server_id != server.pk:
            raise ValidationFailed.on("stream", "is a stream of another server")
    if server is not None and server.organization_id != organization.pk:
        raise NotFound("server not found")
    if pool.dedicated and server_key is None:
        raise ValidationFailed.on("pool", f"{pool.name} is dedicated: assign it to one server key")
    with data_atomic():
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if pool.dedicated:
            others = pool.assignments.exclude(server_key=server_key)
            if others.exists():
                raise Conflict(
                    f"{pool.name} is dedicated to another key", details={"pool": ["dedicated"]}
                )
        scope = PoolAssignment.objects.filter(
            organization=organization, server=server, stream=stream, server_key=server_key
        )
        current = scope.first()
        if current is not None:
            current.pool = pool
            current.save(update_fields=["pool"])
            return current
        return PoolAssignment.objects.create(
            pool=pool,
            organization=organization,
            server=server,
            stream=stream,
            server_key=server_key,
        )


def pool_unassign(*, assignment_id: int) -> None:
    deleted, _ = PoolAssignment.objects.filter(pk=assignment_id).delete()
    if not deleted:
        raise NotFound("no such assignment")
