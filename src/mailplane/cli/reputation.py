"""`mailplane server …` / `mailplane server-key …`: the operator's side of the automatic
pause (reputation/pause.py): see what is paused and why, and resume it."""

from __future__ import annotations

import argparse
from typing import Any

from mailplane.cli.admin import _guard


def add_commands(sub: Any) -> None:
    for noun, what in (("server", "email servers"), ("server-key", "server keys")):
        actions = sub.add_parser(noun, help=f"{what}: paused ones, resume").add_subparsers(
            dest="action", required=True
        )
        resume = actions.add_parser("resume", help="accept its sends again (judged afresh)")
        resume.add_argument("--id", type=int, required=True)
        resume.set_defaults(func=resume_command, noun=noun)
        paused = actions.add_parser("paused", help="list the paused ones and why")
        paused.set_defaults(func=paused_command, noun=noun)


@_guard
def resume_command(args: argparse.Namespace) -> int:
    from django.utils import timezone

    from mailplane.reputation.pause import server_key_resume, server_resume

    now = timezone.now()
    if args.noun == "server":
        owner: Any = server_resume(server_id=args.id, now=now)
    else:
        owner = server_key_resume(key_id=args.id, now=now)
    print(f"{args.noun} {owner.pk} resumed")
    return 0


@_guard
def paused_command(args: argparse.Namespace) -> int:
    from mailplane.servers.models import EmailServer, ServerKey

    model: Any = EmailServer if args.noun == "server" else ServerKey
    for owner in model.objects.filter(paused_at__isnull=False).order_by("id"):
        print(f"{owner.pk}\t{owner.paused_at:%Y-%m-%d %H:%M}\t{owner.paused_reason}")
    return 0
