"""Writes for cells: register, provision (database, migrations, storage root), assign an
account with no data yet, and keep the cell's copies of its accounts' rows current.

Moving an account that has data is the live migration (docs/cells.md), not `cell_assign`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import Model
from django.db.models.deletion import Collector

from mailplane.cells.databases import (
    alias_register,
    database_config,
    database_create,
    database_describe,
)
from mailplane.cells.models import SHARED, Cell, CellState
from mailplane.cells.routing import REGISTRY_APPS, data_alias_using
from mailplane.cells.selectors import cell_name_alias
from mailplane.core.errors import Conflict, DomainError, NotAllowed, Unavailable, ValidationFailed
from mailplane.tenancy.models import Organization

log = logging.getLogger("mailplane.cells")

NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")
RESERVED_NAMES = {SHARED, "default"}
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
Progress = Callable[[str], None]


def _name_checked(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ValidationFailed.on(
            "name",
            "1-40 lowercase letters, digits and hyphens, starting with a letter, "
            "not ending with a hyphen",
        )
    if name in RESERVED_NAMES:
        raise ValidationFailed.on("name", f"{name!r} is reserved")
    return name


def _host_checked(field: str, host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if not host:
        return ""
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValidationFailed.on(field, "not a host name")
    return host


def _storage_checked(root: str) -> str:
    if not root or "\x00" in root or len(root) > 1024 or not Path(root).is_absolute():
        raise ValidationFailed.on("storage_root", "must be an absolute path")
    return str(Path(root))


def _addresses_checked(addresses: Iterable[str]) -> list[str]:
    checked = []
    for address in addresses:
        try:
            checked.append(str(ipaddress.ip_address(address.strip())))
        except ValueError:
            raise ValidationFailed.on(
                "listen_addresses", f"not an IP address: {address!r}"
            ) from None
    return checked


def cell_create(
    *,
    name: str,
    database_url: str,
    storage_root: str,
    smtp_host: str = "",
    imap_host: str = "",
    listen_addresses: Iterable[str] = (),
) -> Cell:
    """Register a cell (state `pending`); `cell_provision` makes it usable."""
    name = _name_checked(name)
    database_config(database_url)  # ValidationFailed on database_url
    storage_root = _storage_checked(storage_root)
    smtp_host = _host_checked("smtp_host", smtp_host)
    imap_host = _host_checked("imap_host", imap_host)
    addresses = _addresses_checked(listen_addresses)
    with transaction.atomic():
        if Cell.objects.filter(name=name).exists():
            raise Conflict(f"cell {name!r} already exists")
        return Cell.objects.create(
            name=name,
            database_url=database_url.strip(),
            storage_root=storage_root,
            smtp_host=smtp_host,
            imap_host=imap_host,
            listen_addresses=addresses,
        )


def _state_set(cell: Cell, state: str, progress: str) -> None:
    cell.state, cell.progress = state, progress
    cell.save(update_fields=["state", "progress", "updated_at"])


def cell_provision(*, cell: Cell, progress: Progress | None = None) -> Cell:
    """Create the cell's database if it is missing, apply every migration to it, create
    its storage root; `ready` at the end. Safe to run again (each step is idempotent): a
    `failed` cell is provisioned again from the start. Each step is recorded in
    `cell.progress` and reported to `progress`."""
    say = progress or (lambda line: None)
    conf = database_config(cell.database_url)
    where = database_describe(conf)
    step = "database"

    def reached(text: str) -> None:
        _state_set(cell, CellState.PROVISIONING, text)
        say(text)

    try:
        reached(f"creating {where} if missing")
        created = database_create(conf)
        step = "migrations"
        reached(f"{where} {'created' if created else 'exists'}; applying migrations")
        alias = alias_register(name=cell.name, url=cell.database_url)
        applied = _migrate(alias)
        step = "storage root"
        reached(f"{applied} migrations applied; creating storage root {cell.storage_root}")
        try:
            Path(cell.storage_root).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise Unavailable(f"cannot create {cell.storage_root}: {exc.strerror}") from None
    except DomainError as exc:
        _state_set(cell, CellState.FAILED, f"failed at {step}: {exc.message}")
        say(cell.progress)
        raise
    _state_set(cell, CellState.READY, f"ready: {where}, storage root {cell.storage_root}")
    say(cell.progress)
    return cell


def _migrate(alias: str) -> int:
    """Apply the migrations to `alias`; how many were applied. Data migrations route their
    data models there too (the context is the cell's while they run)."""
    from django.db.migrations.executor import MigrationExecutor

    try:
        connection = connections[alias]
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
        with data_alias_using(alias):
            call_command("migrate", database=alias, interactive=False, verbosity=0)
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unavailable(f"cannot migrate the cell's database: {reason}") from None
    finally:
        connections[alias].close()
    return pending


def _account_models() -> list[tuple[type[Model], str]]:
    """(model, field) for every data model with a foreign key to the account."""
    found = []
    for model in apps.get_models():
        if model._meta.app_label in REGISTRY_APPS:
            continue
        for field in model._meta.concrete_fields:
            if field.is_relation and field.related_model is Organization:
                found.append((model, field.name))
    return found


def organization_data_counts(*, organization: Organization, alias: str) -> dict[str, int]:
    """Rows the account has in `alias`, per model label, relay servers apart (every account
    gets one at creation: it moves with the account)."""
    from mailplane.relays.models import RelayServer

    counts = {}
    for model, field in _account_models():
        if model is RelayServer:
            continue
        count = model._base_manager.using(alias).filter(**{field: organization.pk}).count()
        if count:
            counts[model._meta.label] = count
    return counts


def organization_mirror(*, organization: Organization, alias: str) -> None:
    """Write the account's row and its owner's into `alias`, same primary keys: the cell's
    data tables point at them. Only what the foreign keys need of the owner is copied (no
    password: logins happen in the registry)."""
    user_model = get_user_model()
    owner = organization.owner
    user_model._base_manager.using(alias).update_or_create(
        pk=owner.pk,
        defaults={
            "username": owner.get_username(),
            "email": getattr(owner, "email", ""),
            "password": "!",  # unusable (django.contrib.auth.hashers.UNUSABLE_PASSWORD_PREFIX)
        },
    )
    fields = {
        f.attname: getattr(organization, f.attname)
        for f in Organization._meta.concrete_fields
        if not f.primary_key
    }
    Organization._base_manager.using(alias).update_or_create(pk=organization.pk, defaults=fields)


def organization_mirror_saved(
    sender: type[Organization], instance: Organization, using: str, **kwargs: Any
) -> None:
    """post_save of Organization (cells/apps.py): refresh the cell's copy."""
    if using != DEFAULT_DB_ALIAS or instance.cell == SHARED or kwargs.get("raw"):
        return
    organization_mirror(organization=instance, alias=cell_name_alias(instance.cell))


def cell_assign(*, organization: Organization, cell_name: str) -> Organization:
    """Put an account that has no data yet on cell `cell_name` (or back on `shared`).

    Its relay servers (made with the account) move along, ids kept. An account with
    domains, mailboxes, messages or any other data is refused: moving data is the live
    migration (docs/cells.md)."""
    if cell_name != SHARED:
        cell = Cell.objects.filter(name=cell_name).first()
        if cell is None:
            raise ValidationFailed.on("cell", f"no cell {cell_name!r}")
        if cell.state != CellState.READY:
            raise NotAllowed(f"cell {cell_name!r} is {cell.state}, not ready: provision it first")
    if organization.cell == cell_name:
        return organization
    source = cell_name_alias(organization.cell)
    target = cell_name_alias(cell_name)
    data = organization_data_counts(organization=organization, alias=source)
    if data:
        held = ", ".join(f"{n} {label}" for label, n in sorted(data.items()))
        raise NotAllowed(
            f"account {organization.slug!r} already has data on cell {organization.cell!r} "
            f"({held}): moving it is a live migration, not an assignment"
        )
    try:
        _relays_move(organization=organization, cell_name=cell_name, source=source, target=target)
    except DatabaseError as exc:
        raise Unavailable(f"cannot reach cell {cell_name!r}: {str(exc).splitlines()[0]}") from None
    log.info("account %s assigned to cell %s", organization.slug, cell_name)
    return organization


def _relays_move(*, organization: Organization, cell_name: str, source: str, target: str) -> None:
    from mailplane.relays.models import RelayServer

    with contextlib.ExitStack() as stack:
        for alias in dict.fromkeys([DEFAULT_DB_ALIAS, source, target]):
            stack.enter_context(transaction.atomic(using=alias))
        relays = list(
            RelayServer._base_manager.using(source)
            .select_for_update()
            .filter(organization_id=organization.pk)
        )
        for relay in relays:
            collector = Collector(using=source)
            collector.collect([relay])
            others = [m for m in collector.data if m is not RelayServer]
            if others or any(qs.exists() for qs in collector.fast_deletes):
                raise NotAllowed(
                    f"relay server {relay.pk} of {organization.slug!r} is in use: "
                    "moving it is a live migration, not an assignment"
                )
        organization.cell = cell_name
        if target != DEFAULT_DB_ALIAS:
            organization_mirror(organization=organization, alias=target)
        for relay in relays:
            relay.save(using=target, force_insert=True)
        RelayServer._base_manager.using(source).filter(pk__in=[r.pk for r in relays]).delete()
        # Rows inserted with their ids leave PostgreSQL's sequence behind: move it on.
        ops = connections[target].ops
        with connections[target].cursor() as cursor:
            for statement in ops.sequence_reset_sql(no_style(), [RelayServer]):
                cursor.execute(statement)
        organization.save(update_fields=["cell"])
