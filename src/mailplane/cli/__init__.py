"""The `mailplane` command: serve, migrate, and operator administration."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import django


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")
    django.setup()


def build_parser() -> argparse.ArgumentParser:
    from mailplane.cli import admin, cells, pools, queue, reputation, serve, status

    parser = argparse.ArgumentParser(prog="mailplane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_commands(sub)
    admin.add_commands(sub)
    cells.add_commands(sub)
    status.add_commands(sub)
    pools.add_commands(sub)
    reputation.add_commands(sub)
    queue.add_commands(sub)
    manage = sub.add_parser("manage", help="run a Django management command")
    manage.add_argument("args", nargs=argparse.REMAINDER)
    manage.set_defaults(func=_manage)
    return parser


def _manage(args: argparse.Namespace) -> int:
    from django.core.management import execute_from_command_line

    execute_from_command_line(["mailplane manage", *args.args])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_django()
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
