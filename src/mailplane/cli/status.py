"""`mailplane status`: the cell's services and backlogs, for an operator or a cron check.

Exit status 0 when every listener answered, 1 otherwise (as Nagios-style checks and
`systemctl`'s ExecCondition read it); `--json` prints the same facts for scripts.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def add_commands(sub: Any) -> None:
    status = sub.add_parser("status", help="is every service answering; how deep is the queue")
    status.add_argument("--json", action="store_true", help="one JSON object on stdout")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds per probe")
    status.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    from mailplane.monitoring.metrics import cell_name
    from mailplane.monitoring.probes import probe_all
    from mailplane.monitoring.selectors import event_stream_head, job_backlog, queue_depth

    results = probe_all(timeout=args.timeout)
    depth = queue_depth()
    jobs = job_backlog()
    report = {
        "cell": cell_name(),
        "services": [asdict(r) for r in results],
        "queue": asdict(depth),
        "jobs": asdict(jobs),
        "events_last_sequence": event_stream_head(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"cell {report['cell']}")
        for r in results:
            state = "up  " if r.up else "DOWN"
            print(f"  {state} {r.service:<22} :{r.port:<6} {r.seconds * 1000:7.1f} ms  {r.detail}")
        waiting = ", ".join(f"{k} {v}" for k, v in depth.waiting.items())
        print(
            f"queue: {waiting}; due {depth.due}, in flight {depth.in_flight}, "
            f"oldest due {depth.oldest_due_seconds:.0f} s"
        )
        print(f"jobs: {jobs.pending} pending, oldest {jobs.oldest_pending_seconds:.0f} s")
    return 0 if all(r.up for r in results) else 1
