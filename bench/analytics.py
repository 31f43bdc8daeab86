"""Analytics benchmark (issue 12): events/s the consumer counts from a backlog, and the
time of a stats request over a year of days and over a month of hours.

    .venv/bin/python bench/analytics.py                  # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mailplane .venv/bin/python bench/analytics.py
    .venv/bin/python bench/analytics.py --quick          # smoke run

On a throw-away data directory (PostgreSQL: a throw-away database), with one sandbox
email server: each message is queued and recorded as delivered in one transaction (two
events), spread over `--tags` tags and both streams. The consumer (analytics/consumer.py)
runs in this process, a batch per transaction as the service runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import _pct, _pg_admin, _prepare_environment
from bench.harness import bench_account, bench_django


def _send(server: Any, count: int, start: int, tags: int) -> None:
    from mailplane.sending.requests import send_request_parse
    from mailplane.sending.services import SendContext, message_prepare, messages_send

    ctx = SendContext.load(server)
    prepared = [
        message_prepare(
            ctx=ctx,
            request=send_request_parse(
                {
                    "from": "app@bench.test",
                    "to": f"user{start + i}@far-away{(start + i) % 50}.test",
                    "subject": "Bench",
                    "text": "Hello.",
                    "tags": [f"tag{(start + i) % tags}"],
                    "stream": "broadcast" if (start + i) % 3 == 0 else "outbound",
                }
            ),
        )
        for i in range(count)
    ]
    messages_send(server=server, prepared=prepared)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=20_000, help="messages (2 events each)")
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000, help="events per transaction")
    parser.add_argument("--requests", type=int, default=50, help="stats requests timed")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.backlog, args.requests = 2000, 10
    args.broker = ""
    args.database_url = os.environ.get("DATABASE_URL", "")
    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-"))
    env = _prepare_environment(args, data_dir)
    try:
        bench_django(env=env)
        from django.utils import timezone
        from rest_framework.test import APIClient

        from mailplane.analytics.consumer import events_count
        from mailplane.servers.services import email_server_create
        from mailplane.tenancy.services import api_key_create

        org, _relay, _domain = bench_account(plan="enterprise")
        server = email_server_create(organization=org, name="bench", sandbox=True)
        key = api_key_create(organization=org, name="bench").secret
        db = "PostgreSQL" if args.database_url else "SQLite"
        print(f"analytics bench: {db}, {os.cpu_count()} CPUs")
        for start in range(0, args.backlog, 500):
            _send(server, min(500, args.backlog - start), start, args.tags)
        total = 2 * args.backlog
        began = time.perf_counter()
        counted = 0
        while n := events_count(limit=args.batch):
            counted += n
        took = time.perf_counter() - began
        print(f"backlog: {counted} events counted in {took:.2f} s = {counted / took:,.0f} events/s")

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        today = timezone.now().date()
        year_ago = today - timedelta(days=365)  # with today: 366 days
        for label, path in (
            ("366 days by day", f"/api/servers/{server.pk}/stats/?from={year_ago}&to={today}"),
            (
                "24 hours by hour, one tag",
                f"/api/servers/{server.pk}/stats/?group_by=hour&tag=tag3",
            ),
            ("latency, 30 days", f"/api/servers/{server.pk}/stats/latency/"),
            ("bounce domains, 30 days", f"/api/servers/{server.pk}/stats/bounce-domains/"),
        ):
            times = []
            for _ in range(args.requests):
                start = time.perf_counter()
                reply = client.get(path)
                times.append(time.perf_counter() - start)
                assert reply.status_code == 200, reply.content
            print(f"{label}: p50={_pct(times, 0.5):.1f} ms p99={_pct(times, 0.99):.1f} ms")
        assert counted == total, (counted, total)
    finally:
        from django.db import connections

        connections.close_all()
        if args.bench_db:
            _pg_admin(args.database_url, f'DROP DATABASE IF EXISTS "{args.bench_db}"')
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
