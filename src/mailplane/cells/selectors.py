"""Reads about cells: which one an account is on, its database alias, its host names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Model, QuerySet

from mailplane.cells.databases import alias_register, cell_alias
from mailplane.cells.models import SHARED, Cell
from mailplane.cells.routing import SHARED_ROUTE, Route, data_alias
from mailplane.core.errors import NotFound, Unavailable
from mailplane.tenancy.models import Organization


@dataclass(frozen=True, slots=True)
class SharedCell:
    """The shared cell: the deployment's own database and storage root (it has no row)."""

    name: str
    storage_root: str
    smtp_host: str
    imap_host: str


def shared_cell() -> SharedCell:
    conf = settings.MAILPLANE
    return SharedCell(
        name=SHARED,
        storage_root=str(conf["STORAGE_ROOT"]),
        smtp_host=str(conf["SHARED_SMTP_HOST"]),
        imap_host=str(conf["SHARED_IMAP_HOST"]),
    )


def cell_list() -> QuerySet[Cell]:
    return Cell.objects.order_by("name")


def cell_get(*, name: str) -> Cell:
    cell = Cell.objects.filter(name=name).first()
    if cell is None:
        raise NotFound(f"no cell {name!r}")
    return cell


def cell_name_alias(name: str) -> str:
    """The database alias of cell `name` in this process, registered on first use (one
    registry read per process and cell)."""
    if name == SHARED:
        return DEFAULT_DB_ALIAS
    alias = cell_alias(name)
    if alias in connections.databases:
        return alias
    cell = Cell.objects.filter(name=name).first()
    if cell is None:
        # An account pointing at a cell the registry lost: refuse rather than guess.
        raise NotFound(f"the account's cell {name!r} is not in the registry")
    return alias_register(name=cell.name, url=cell.database_url)


def organization_alias(*, organization: Organization) -> str:
    """The database alias the account's data lives in."""
    return cell_name_alias(organization.cell)


_storage_roots: dict[str, str] = {}


def organization_route(*, organization: Organization) -> Route:
    """The account's database alias and storage root (read once per process and cell)."""
    if organization.cell == SHARED:
        return SHARED_ROUTE
    alias = cell_name_alias(organization.cell)
    root = _storage_roots.get(organization.cell)
    if root is None:
        root = Cell.objects.filter(name=organization.cell).values_list(
            "storage_root", flat=True
        ).first() or str(settings.MAILPLANE["STORAGE_ROOT"])
        _storage_roots[organization.cell] = root
    return Route(alias=alias, storage_root=root)


def organization_cell_hosts(*, organization: Organization) -> tuple[str, str] | None:
    """(smtp host, imap host) of the account's own cell; None on the shared cell."""
    if organization.cell == SHARED:
        return None
    cell = Cell.objects.filter(name=organization.cell).only("smtp_host", "imap_host").first()
    if cell is None:
        return None
    return cell.smtp_host, cell.imap_host


def data_routes() -> list[Route]:
    """Every place that holds accounts' data: the shared cell first, then each ready
    cell (registered in this process as a side effect)."""
    from mailplane.cells.models import CellState

    cells = Cell.objects.filter(state=CellState.READY).values_list("name", "storage_root")
    return [
        SHARED_ROUTE,
        *(Route(alias=cell_name_alias(name), storage_root=root) for name, root in cells),
    ]


def exists_in_other_cells(model: type[Model], **filters: Any) -> bool:
    """Whether a row matching `filters` exists in another cell's database than the current
    one: names that must be unique platform-wide (a domain) are checked in every cell.
    Not atomic across databases: two cells registering one name in the same instant can
    both succeed (DNS verification still decides who owns it)."""
    current = data_alias()
    try:
        return any(
            model._base_manager.using(route.alias).filter(**filters).exists()
            for route in data_routes()
            if route.alias != current
        )
    except DatabaseError as exc:
        raise Unavailable(f"a cell's database is unreachable: {type(exc).__name__}") from None
