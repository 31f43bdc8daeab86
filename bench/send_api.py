"""Send API benchmark (issue 11): accept latency at fixed arrival rates, and batch throughput.

    .venv/bin/python bench/send_api.py                  # SQLite, file-system broker
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mailplane .venv/bin/python bench/send_api.py
    .venv/bin/python bench/send_api.py --quick          # smoke run: 3 s per rate, 4 batches

What it measures against `mailplane serve --only web` (gunicorn, as in production) on a
throw-away data directory (PostgreSQL: a throw-away database named after DATABASE_URL's),
with one live email server of an Enterprise account and a send-only server key:

* single sends, open loop: `POST /api/email/` (one recipient, 1 KB text) arriving at fixed
  rates (default 100, 200 and 400 requests/s). Each request has a scheduled arrival time;
  its latency runs from that time to the response, so queueing in the client pool or the
  server shows up (a closed loop would hide it by slowing down the arrivals).
* batches, closed loop: `POST /api/email/batch/` with 500 messages each from two client
  threads; messages accepted per second.

Every 200 means the message and its queued recipient are committed (the send API answers
only once the message is durable). No delivery worker runs: this measures accepting mail.
The client runs in this process, on the same cores as the server (issue 11 targets count it).
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import (
    Client,
    _free_port,
    _line,
    _pct,
    _pg_admin,
    _prepare_environment,
    _start_server,
)
from bench.harness import bench_account, bench_django

TEXT = ("Hello from the send API benchmark. " * 30)[:1024]


class ServerKeyClient(Client):
    """bench/api.py's keep-alive client, authenticated with a server key."""

    def __init__(self, port: int, key: str) -> None:
        super().__init__(port, key)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _seed(env: dict[str, str]) -> str:
    """Migrate, make the account and its live email server; returns a send-only key."""
    bench_django(env=env)
    from django.db import connections

    from mailplane.servers.services import email_server_create, server_key_create

    org, _relay, _domain = bench_account(plan="enterprise")
    server = email_server_create(organization=org, name="bench", sandbox=False)
    secret = server_key_create(server=server, name="bench", kind="send_only").secret
    connections.close_all()
    return str(secret)


def _message(n: int) -> dict[str, Any]:
    return {
        "from": "Bench <app@bench.test>",
        "to": f"user{n}@far-away.test",
        "subject": f"Bench {n}",
        "text": TEXT,
    }


def open_loop(port: int, key: str, rate: float, seconds: float, threads: int) -> dict[str, Any]:
    """Requests scheduled at `rate`/s; latency from each one's scheduled arrival."""
    total = int(rate * seconds)
    todo: queue.Queue[tuple[int, float] | None] = queue.Queue()
    latencies: list[float] = []
    service: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = ServerKeyClient(port, key)
        while (job := todo.get()) is not None:
            n, due = job
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            status, seconds_taken, body = client.request("POST", "/api/email/", _message(n))
            done = time.perf_counter()
            with lock:
                if status == 200:
                    latencies.append(done - due)
                    service.append(seconds_taken)
                else:
                    errors.append(f"{status}: {body[:200]!r}")

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    start = time.perf_counter() + 0.2
    for n in range(total):
        todo.put((n, start + n / rate))
    for _ in pool:
        todo.put(None)
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    return {
        "rate": rate,
        "sent": total,
        "ok": len(latencies),
        "errors": errors,
        "achieved": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "latencies": latencies,
        "service": service,
    }


def batches(port: int, key: str, count: int, size: int, threads: int) -> tuple[float, list[float]]:
    """`count` batches of `size` from `threads` clients; (messages/s, per-batch seconds)."""
    todo: queue.Queue[int | None] = queue.Queue()
    timings: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = ServerKeyClient(port, key)
        while (b := todo.get()) is not None:
            body = [_message(b * size + i) for i in range(size)]
            status, seconds_taken, data = client.request("POST", "/api/email/batch/", body)
            with lock:
                if status == 200:
                    timings.append(seconds_taken)
                else:
                    errors.append(f"{status}: {data[:200]!r}")

    for b in range(count):
        todo.put(b)
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        todo.put(None)
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} batch requests failed, e.g. {errors[0]}")
    return count * size / elapsed, timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,200,400", help="requests/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="per rate")
    parser.add_argument("--threads", type=int, default=32, help="client connections")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--broker", default="", help="broker URL (default: file-system queue)")
    parser.add_argument("--quick", action="store_true", help="3 s per rate, 4 batches")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.batches = 3.0, 4
    args.database_url = os.environ.get("DATABASE_URL", "")

    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-send-"))
    env = _prepare_environment(args, data_dir)
    proc = None
    try:
        key = _seed(env)
        port = _free_port()
        proc = _start_server(env, port, args, data_dir / "server.log")
        engine = "postgresql" if args.bench_db else "sqlite"
        print(
            f"server: mailplane serve --only web ({args.web_workers} gunicorn workers x 4 "
            f"threads), {engine}; client: {args.threads} keep-alive connections in this "
            f"process; python {platform.python_version()}; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        warm = open_loop(port, key, 50, 1.0, 4)  # imports, connections, caches
        if warm["errors"]:
            raise SystemExit(f"warm-up failed: {warm['errors'][0]}")
        for rate in (float(r) for r in args.rates.split(",")):
            result = open_loop(port, key, rate, args.seconds, args.threads)
            print(
                _line(f"POST /api/email/ @ {rate:.0f}/s", result["latencies"])
                + f"  achieved={result['achieved']:.0f}/s errors={len(result['errors'])}"
                + f"  (service p99 {_pct(result['service'], 0.99):.1f} ms)",
                flush=True,
            )
            if result["errors"]:
                print(f"  e.g. {result['errors'][0]}", flush=True)
        rate, timings = batches(port, key, args.batches, args.batch_size, threads=2)
        print(
            _line(f"POST /api/email/batch/ x{args.batch_size}", timings)
            + f"  accepted={rate:,.0f} msg/s",
            flush=True,
        )
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)
        if args.bench_db:
            _pg_admin(args.database_url, f'DROP DATABASE IF EXISTS "{args.bench_db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
