"""`mailplane queue list|release|retry|cancel`: the operator's console on the outbound
queue of email servers (every account's), with the filters of the API's queue view
(queue/waiting.py, queue/services.py). Postal's users fix stuck queues by hand in a Rails
console; this is that console's few useful lines, through the queue's one writer."""

from __future__ import annotations

import argparse
import json
from typing import Any, cast

from mailplane.cli.admin import _guard

ACTIONS = ("release", "retry", "cancel")


def add_commands(sub: Any) -> None:
    actions = sub.add_parser(
        "queue", help="email servers' waiting mail: why it waits; release, retry, cancel"
    ).add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "waiting recipients, why and until when (tab-separated, or --json)"),
        ("release", "send held mail now (content filter, volume cap, pause)"),
        ("retry", "try deferred mail again now"),
        ("cancel", "cancel waiting mail: never sent, a cancelled event each"),
    ):
        command = actions.add_parser(name, help=text)
        command.add_argument("--server", type=int, help="one server's (default: every server's)")
        command.add_argument("--reason", help="waiting reason (list shows them)")
        command.add_argument("--stream", help="stream id (with --server)")
        command.add_argument("--recipient", help="recipient address")
        command.add_argument("--recipient-domain", help="recipient domain")
        command.add_argument("--server-key", type=int, help="sent with this server key")
        if name == "list":
            command.add_argument("--limit", type=int, default=100, help="at most this many")
            command.add_argument("--json", action="store_true", help="one JSON object a line")
            command.set_defaults(func=list_command)
        else:
            command.add_argument(
                "--all", action="store_true", help="required when no filter is given"
            )
            command.set_defaults(func=action_command)


def _where(args: argparse.Namespace) -> Any:
    """The filter, checked as the API checks it (400 there, exit 1 here)."""
    from mailplane.api.queue import QueueQuery, queue_filter_of
    from mailplane.core.errors import ValidationFailed

    data = {
        name: value
        for name, value in (
            ("reason", args.reason),
            ("stream", args.stream),
            ("recipient", args.recipient),
            ("recipient_domain", args.recipient_domain),
            ("server_key", args.server_key),
        )
        if value is not None
    }
    checked = QueueQuery(data=data)
    if not checked.is_valid():
        field, errors = next(iter(checked.errors.items()))
        raise ValidationFailed.on(field, str(errors[0]))
    return queue_filter_of(dict(checked.validated_data))


@_guard
def list_command(args: argparse.Namespace) -> int:
    from django.utils import timezone

    from mailplane.core.errors import ValidationFailed
    from mailplane.queue.waiting import server_queue

    if not 1 <= args.limit <= 100_000:
        raise ValidationFailed.on("limit", "from 1 to 100000")
    rows = server_queue(server_id=args.server, where=_where(args), now=timezone.now())
    for row in rows[: args.limit]:
        row = cast(Any, row)  # annotated by recipients_waiting: waiting_reason, …
        link = row.message.server_link
        until = row.waiting_until.isoformat() if row.waiting_until else ""
        entry = {
            "id": row.pk,
            "message": row.message_id,
            "server": link.server_id,
            "stream": link.stream.stream_id,
            "recipient": row.rcpt_to,
            "status": row.status,
            "reason": row.waiting_reason,
            "until": until or None,
            "detail": row.waiting_detail,
        }
        if args.json:
            print(json.dumps(entry))
        else:
            print(
                "\t".join(
                    str(v)
                    for v in (
                        row.pk,
                        row.message_id,
                        link.server_id,
                        row.rcpt_to,
                        row.waiting_reason,
                        until or "-",
                        row.waiting_detail,
                    )
                )
            )
    return 0


@_guard
def action_command(args: argparse.Namespace) -> int:
    from django.utils import timezone

    from mailplane.core.errors import ValidationFailed
    from mailplane.queue.services import queue_action

    where = _where(args)
    if not where.narrows() and not args.all:
        raise ValidationFailed.on("all", "give a filter (--reason, --stream, …) or --all")
    total = skipped = 0
    while True:  # the service takes a bounded batch per call; the console goes on
        done = queue_action(
            action=args.action,
            server_id=args.server,
            where=where,
            now=timezone.now(),
            actor="operator (CLI)",
        )
        total += done.changed
        skipped += done.skipped
        if not done.more or done.changed == 0:
            break
    print(f"{args.action}: {total} recipients changed, {skipped} skipped")
    return 0
