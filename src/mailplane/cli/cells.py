"""`mailplane cell …`: the operator's side of single tenant (docs/cells.md).

There is no operator API yet (every API route is an account's, behind its key), so cells
are provisioned and assigned here only.
"""

from __future__ import annotations

import argparse
from typing import Any

from mailplane.cli.admin import _guard, _org


def add_commands(sub: Any) -> None:
    cell = sub.add_parser("cell", help="cells: dedicated data planes (single tenant)")
    actions = cell.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create",
        help="register a cell and provision it: create its database if missing, migrate "
        "it, create its storage root",
    )
    create.add_argument("name", help="lowercase letters, digits, hyphens")
    create.add_argument(
        "--database-url",
        required=True,
        help="postgres://user:password@host:port/name, or sqlite:////absolute/path",
    )
    create.add_argument("--storage-root", required=True, help="absolute path for its Maildirs")
    create.add_argument(
        "--host", default="", help="host name mail clients use (SMTP and IMAP alike)"
    )
    create.add_argument("--smtp-host", default="", help="SMTP host name, if not --host")
    create.add_argument("--imap-host", default="", help="IMAP host name, if not --host")
    create.add_argument(
        "--listen", action="append", default=[], help="IP address its listeners bind (repeat)"
    )
    create.set_defaults(func=cell_create)
    provision = actions.add_parser("provision", help="provision a cell again (after a failure)")
    provision.add_argument("name")
    provision.set_defaults(func=cell_provision)
    listing = actions.add_parser("list", help="cells, their state and accounts")
    listing.set_defaults(func=cell_list)
    assign = actions.add_parser(
        "assign", help="put an account with no data yet on a cell (or back on `shared`)"
    )
    assign.add_argument("account", help="the account's slug")
    assign.add_argument("cell")
    assign.set_defaults(func=cell_assign)


@_guard
def cell_create(args: argparse.Namespace) -> int:
    from mailplane.cells import services

    cell = services.cell_create(
        name=args.name,
        database_url=args.database_url,
        storage_root=args.storage_root,
        smtp_host=args.smtp_host or args.host,
        imap_host=args.imap_host or args.host,
        listen_addresses=args.listen,
    )
    print(f"cell {cell.name} registered", flush=True)
    services.cell_provision(cell=cell, progress=lambda line: print(f"  {line}", flush=True))
    return 0


@_guard
def cell_provision(args: argparse.Namespace) -> int:
    from mailplane.cells import services
    from mailplane.cells.selectors import cell_get

    cell = cell_get(name=args.name)
    services.cell_provision(cell=cell, progress=lambda line: print(f"  {line}", flush=True))
    return 0


@_guard
def cell_list(args: argparse.Namespace) -> int:
    from django.db.models import Count

    from mailplane.cells.databases import url_masked
    from mailplane.cells.models import SHARED
    from mailplane.cells.selectors import cell_list as cells
    from mailplane.cells.selectors import shared_cell
    from mailplane.tenancy.models import Organization

    accounts = dict(
        Organization.objects.values_list("cell").annotate(n=Count("id")).values_list("cell", "n")
    )
    shared = shared_cell()
    print("name\tstate\taccounts\tsmtp host\timap host\tstorage root\tdatabase\tprogress")
    print(
        f"{SHARED}\tready\t{accounts.get(SHARED, 0)}\t{shared.smtp_host}\t{shared.imap_host}\t"
        f"{shared.storage_root}\t(DATABASE_URL)\t"
    )
    for cell in cells():
        print(
            f"{cell.name}\t{cell.state}\t{accounts.get(cell.name, 0)}\t{cell.smtp_host or '-'}\t"
            f"{cell.imap_host or '-'}\t{cell.storage_root}\t{url_masked(cell.database_url)}\t"
            f"{cell.progress}"
        )
    return 0


@_guard
def cell_assign(args: argparse.Namespace) -> int:
    from mailplane.cells.services import cell_assign as assign

    org = assign(organization=_org(args.account), cell_name=args.cell)
    print(f"account {org.slug} is on cell {org.cell}")
    return 0
