"""Webhook benchmark (issue 12): events/s delivered to a local receiver, and the lag from an
event's creation to its receipt (p50/p99).

    .venv/bin/python bench/webhooks.py                  # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mailplane .venv/bin/python bench/webhooks.py
    .venv/bin/python bench/webhooks.py --quick          # smoke run

On a throw-away data directory (PostgreSQL: a throw-away database named after
DATABASE_URL's), with one sandbox email server (each message is queued and recorded as
delivered in one transaction: two events, no delivery worker needed) and one endpoint of
it subscribed to every event type, pointing at a receiver on 127.0.0.1 (a separate
process: a minimal asyncio HTTP/1.1 server that answers 204 and notes when each request
arrived). The webhook service runs as `mailplane serve` starts it (`python -m
mailplane.webhooks`, `--workers` processes).

* backlog: `--backlog` messages' events are written first, then the workers start;
  events/s from their start to the last receipt (throughput, no lag figure).
* live: messages are sent in batches at `--rate` messages/s (2 events each) for
  `--seconds`; lag is receipt time minus the event's `timestamp`, per event.

The producer, the workers and the receiver share this machine's cores. The delivery
benchmark is not run alongside here: start bench/delivery.py beside it for that figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import _free_port, _pct, _pg_admin, _prepare_environment
from bench.harness import bench_account, bench_django

# --- the receiver (run as `bench/webhooks.py --receiver PORT FILE`)


async def _receive(port: int, out: Path) -> None:
    lines: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                webhook_id = ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        webhook_id = value.strip().decode()
                body = await reader.readexactly(length)
                now = time.time()
                stamp = json.loads(body)["timestamp"]
                lines.append(f"{now}\t{webhook_id}\t{stamp}\n")
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            if lines:
                with out.open("a") as handle_out:
                    handle_out.writelines(lines)
                lines.clear()
    if lines:
        with out.open("a") as handle_out:
            handle_out.writelines(lines)


# --- the run


def _seed(env: dict[str, str], port: int, concurrency: int) -> Any:
    bench_django(env=env)
    from mailplane.servers.services import email_server_create
    from mailplane.webhooks.models import WebhookEventType
    from mailplane.webhooks.services import webhook_endpoint_create

    org, _relay, _domain = bench_account(plan="enterprise")
    server = email_server_create(organization=org, name="bench", sandbox=True)
    webhook_endpoint_create(
        server=server,
        url=f"http://127.0.0.1:{port}/hook",
        event_types=WebhookEventType.values,
        max_concurrency=concurrency,
    )
    return server


def _send(server: Any, count: int, start: int) -> None:
    from mailplane.sending.requests import send_request_parse
    from mailplane.sending.services import SendContext, message_prepare, messages_send

    ctx = SendContext.load(server)
    prepared = [
        message_prepare(
            ctx=ctx,
            request=send_request_parse(
                {
                    "from": "app@bench.test",
                    "to": f"user{start + i}@far-away.test",
                    "subject": "Bench",
                    "text": "Hello.",
                }
            ),
        )
        for i in range(count)
    ]
    messages_send(server=server, prepared=prepared)


def _workers(env: dict[str, str], n: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "mailplane.webhooks"], env=env) for _ in range(n)
    ]


def _received(out: Path) -> list[tuple[float, str, float]]:
    rows = []
    if out.exists():
        for line in out.read_text().splitlines():
            at, webhook_id, stamp = line.split("\t")
            created = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            rows.append((float(at), webhook_id, created))
    return rows


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used (Linux /proc), 0 elsewhere: a
    figure less sensitive than events/s to what else the machine runs."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _wait_delivered(total: int, timeout: float) -> float:
    from mailplane.webhooks.models import DeliveryState, WebhookDelivery

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).count()
        if done >= total:
            return time.time()
        time.sleep(0.1)
    raise SystemExit(f"timed out: {done} of {total} deliveries delivered")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receiver", nargs=2, metavar=("PORT", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--backlog", type=int, default=10_000, help="messages (2 events each)")
    parser.add_argument("--rate", type=int, default=500, help="live: messages/s")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="webhook processes (PG: >1)")
    parser.add_argument(
        "--endpoint-concurrency", type=int, default=50, help="the endpoint's max_concurrency"
    )
    parser.add_argument(
        "--broker",
        default=os.environ.get("CELERY_BROKER_URL", ""),
        help="Celery broker (production: redis://…; default CELERY_BROKER_URL, else embedded)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    if args.receiver:
        asyncio.run(_receive(int(args.receiver[0]), Path(args.receiver[1])))
        return 0
    if args.quick:
        args.backlog, args.rate, args.seconds = 1000, 200, 5.0
    args.database_url = os.environ.get("DATABASE_URL", "")

    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-"))
    env = _prepare_environment(args, data_dir)
    env["MAILPLANE_WEBHOOKS_ALLOW_PRIVATE"] = "1"
    port = _free_port()
    out = data_dir / "received.tsv"
    receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(port), str(out)])
    workers: list[subprocess.Popen[bytes]] = []
    try:
        server = _seed(env, port, args.endpoint_concurrency)
        db = "PostgreSQL" if args.database_url else "SQLite"
        if args.broker.startswith("redis"):
            db += " + Redis"
        print(f"webhooks bench: {db}, {args.workers} worker(s), {os.cpu_count()} CPUs")

        for start in range(0, args.backlog, 500):
            _send(server, min(500, args.backlog - start), start)
        total = 2 * args.backlog
        began = time.time()
        workers = _workers(env, args.workers)
        pids = [w.pid for w in workers]
        print(f"worker pids (for py-spy): {' '.join(map(str, pids))}", flush=True)
        ended = _wait_delivered(total, timeout=600)
        cpu = _cpu_seconds(pids)
        print(
            f"backlog: {total} events in {ended - began:.1f} s = "
            f"{total / (ended - began):,.0f} events/s (worker start included); "
            f"worker CPU {cpu * 1000 / total:.2f} ms/event (start included)"
        )

        live_start = time.time()
        sent = 0
        batch = max(1, args.rate // 20)  # a batch every 50 ms
        while time.time() - live_start < args.seconds:
            due = int((time.time() - live_start) * args.rate)
            while sent < due:
                _send(server, batch, args.backlog + sent)
                sent += batch
            time.sleep(0.005)
        _wait_delivered(total + 2 * sent, timeout=600)
        live_cpu = _cpu_seconds(pids) - cpu
        time.sleep(1.0)  # the receiver writes its notes every half second
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(30)
        rows = _received(out)
        # The live events are those created from here on (the receiver's notes of the
        # backlog's last half second may come later: they are not live ones).
        live = [row for row in rows if row[2] >= live_start]
        lags = [at - created for at, _, created in live]
        ids = [wid for _, wid, _ in rows]
        print(
            f"live: {2 * sent} events at {2 * args.rate} events/s for {args.seconds:g} s: "
            f"lag p50={_pct(lags, 0.50):.0f} ms p99={_pct(lags, 0.99):.0f} ms "
            f"max={max(lags) * 1000:.0f} ms; worker CPU "
            f"{live_cpu * 1000 / max(1, 2 * sent):.2f} ms/event"
        )
        print(f"received {len(ids)} requests, {len(set(ids))} distinct webhook ids")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        if receiver.poll() is None:
            receiver.terminate()
            receiver.wait(30)
        from django.db import connections

        connections.close_all()
        if args.bench_db:
            _pg_admin(args.database_url, f'DROP DATABASE IF EXISTS "{args.bench_db}"')
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
