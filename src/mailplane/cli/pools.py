"""`mailplane pool …`: the operator's IP pools (pools/): addresses, HELO names, who uses them."""

from __future__ import annotations

import argparse
from typing import Any

from mailplane.cli.admin import _guard, _org


def add_commands(sub: Any) -> None:
    pool = sub.add_parser("pool", help="IP pools outbound mail leaves from").add_subparsers(
        dest="action", required=True
    )
    create = pool.add_parser("create", help="a new pool")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--dedicated", action="store_true", help="for one server key only (its own reputation)"
    )
    create.set_defaults(func=pool_create_command)
    add = pool.add_parser("add-address", help="an address this host can bind, with its PTR name")
    add.add_argument("--pool", required=True)
    add.add_argument("--address", required=True)
    add.add_argument("--helo", required=True, help="EHLO name (the address's PTR record)")
    add.add_argument(
        "--warmup", action="store_true", help="a new address: ramp it up (pools/warmup.py)"
    )
    add.set_defaults(func=pool_address_add_command)
    schedule = pool.add_parser("set-schedule", help="the pool's warm-up ramp, as JSON on stdin")
    schedule.add_argument("--pool", required=True)
    schedule.set_defaults(func=pool_schedule_command)
    for verb, enabled in (("enable-address", True), ("disable-address", False)):
        toggle = pool.add_parser(verb)
        toggle.add_argument("--address", required=True)
        toggle.set_defaults(func=pool_address_toggle_command, enabled=enabled)
    assign = pool.add_parser(
        "assign", help="send an account's (or its server's, stream's, key's) mail from a pool"
    )
    assign.add_argument("--pool", required=True)
    assign.add_argument("--org", required=True)
    assign.add_argument("--server", type=int, help="email server id")
    assign.add_argument("--stream", help="stream id of that server (e.g. broadcast)")
    assign.add_argument("--key", type=int, help="server key id")
    assign.set_defaults(func=pool_assign_command)
    unassign = pool.add_parser("unassign")
    unassign.add_argument("--id", type=int, required=True, help="assignment id (pool list)")
    unassign.set_defaults(func=pool_unassign_command)
    listing = pool.add_parser("list")
    listing.set_defaults(func=pool_list_command)


def _pool(name: str) -> Any:
    from mailplane.core.errors import NotFound
    from mailplane.pools.selectors import pool_get

    pool = pool_get(name=name)
    if pool is None:
        raise NotFound(f"no pool {name!r}")
    return pool


@_guard
def pool_create_command(args: argparse.Namespace) -> int:
    from mailplane.pools.services import pool_create

    pool = pool_create(name=args.name, dedicated=args.dedicated)
    print(f"pool {pool.name} created{' (dedicated)' if pool.dedicated else ''}")
    return 0


@_guard
def pool_address_add_command(args: argparse.Namespace) -> int:
    from mailplane.pools.services import pool_address_add

    row = pool_address_add(
        pool=_pool(args.pool), address=args.address, helo_name=args.helo, warmup=args.warmup
    )
    warming = ", warming up from day 1" if row.warmup_day else ""
    print(f"{row.address} ({row.helo_name}) added to {args.pool}{warming}")
    return 0


@_guard
def pool_schedule_command(args: argparse.Namespace) -> int:
    import json
    import sys

    from mailplane.pools.services import pool_schedule_set

    pool = pool_schedule_set(pool=_pool(args.pool), schedule=json.load(sys.stdin))
    print(f"{pool.name}: {len(pool.warmup_schedule)} warm-up stages")
    return 0


@_guard
def pool_address_toggle_command(args: argparse.Namespace) -> int:
    from mailplane.pools.services import pool_address_enable

    row = pool_address_enable(address=args.address, enabled=args.enabled)
    print(f"{row.address} {'enabled' if row.enabled else 'disabled'}")
    return 0


@_guard
def pool_assign_command(args: argparse.Namespace) -> int:
    from mailplane.core.errors import NotFound
    from mailplane.pools.services import pool_assign
    from mailplane.servers.models import EmailServer, MessageStream, ServerKey

    org = _org(args.org)
    server = stream = key = None
    if args.server is not None:
        server = EmailServer.objects.filter(organization=org, pk=args.server).first()
        if server is None:
            raise NotFound(f"no server {args.server} in {args.org}")
    if args.stream is not None:
        if server is None:
            raise NotFound("--stream needs --server")
        stream = MessageStream.objects.filter(server=server, stream_id=args.stream).first()
        if stream is None:
            raise NotFound(f"no stream {args.stream!r} on server {server.pk}")
    if args.key is not None:
        key = ServerKey.objects.filter(server__organization=org, pk=args.key).first()
        if key is None:
            raise NotFound(f"no server key {args.key} in {args.org}")
    assignment = pool_assign(
        pool=_pool(args.pool), organization=org, server=server, stream=stream, server_key=key
    )
    print(f"assignment {assignment.pk}: {args.pool} for {args.org}")
    return 0


@_guard
def pool_unassign_command(args: argparse.Namespace) -> int:
    from mailplane.pools.services import pool_unassign

    pool_unassign(assignment_id=args.id)
    print(f"assignment {args.id} removed")
    return 0


def pool_list_command(args: argparse.Namespace) -> int:
    from mailplane.pools.selectors import pool_list

    for pool in pool_list():
        print(f"{pool.name}{' (dedicated)' if pool.dedicated else ''}")
        for a in pool.addresses.all():
            state = f"  warm-up day {a.warmup_day}" if a.warmup_day else ""
            disabled = "" if a.enabled else "  (disabled)"
            print(f"  {a.address:<40} {a.helo_name}{state}{disabled}")
        for s in pool.assignments.all():
            scope = ", ".join(
                f"{name} {value}"
                for name, value in (
                    ("org", s.organization_id),
                    ("server", s.server_id),
                    ("stream", s.stream_id),
                    ("key", s.server_key_id),
                )
                if value is not None
            )
            print(f"  assignment {s.pk}: {scope}")
    return 0
