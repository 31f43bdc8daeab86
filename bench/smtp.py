"""SMTP submission ingest: messages/s accepted over 50 concurrent TLS connections, 10 KB each.

Runs the real service (`python -m mailplane.smtp submission`) as its own process on a
fresh embedded data directory (SQLite; or PostgreSQL with `--database-url`, which must name
an empty throw-away database), creates one mailbox, then drives it with aiosmtplib:
each connection logs in once (implicit TLS, port-465 style) and sends messages back to back.
Every accepted message is on the outbound queue and in the Sent folder before its 250.

    .venv/bin/python bench/smtp.py [--messages 5000] [--connections 50] [--size 10240]
                                   [--database-url postgres://postgres@127.0.0.1/bench_smtp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import bench_account, bench_django


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-smtp-"))
    ports = {"MAILPLANE_SMTP_PORT": _free_port(), "MAILPLANE_SUBMISSION_PORT": _free_port()}
    bench_django(
        env={
            **{k: str(v) for k, v in ports.items()},
            "MAILPLANE_DATA_DIR": str(data_dir),
            "MAILPLANE_LOG_LEVEL": "WARNING",
        },
        database_url=args.database_url or None,
    )
    from mailplane.mailboxes.services import mailbox_create, mailbox_validate
    from mailplane.queue.models import OutboundMessage

    org, _relay, domain = bench_account(plan="enterprise")
    password = "Bench-passw0rd!"
    spec = mailbox_validate(
        organization=org, data={"email": "sender", "domain": domain.pk, "password": password}
    )
    mailbox = mailbox_create(organization=org, spec=spec)

    server = subprocess.Popen([sys.executable, "-m", "mailplane.smtp", "submission"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["MAILPLANE_SMTP_PORT"]), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("submission service did not start") from None
                time.sleep(0.1)
        elapsed, latencies = asyncio.run(
            _drive(
                port=ports["MAILPLANE_SMTP_PORT"],
                address=mailbox.address,
                password=password,
                total=args.messages,
                connections=args.connections,
                size=args.size,
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
    stored = OutboundMessage.objects.count()
    lat = sorted(latencies)
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}")
    from django.db import connection

    print(f"database: {connection.vendor}")
    print(
        f"submission ingest: {len(lat)} messages x {args.size} B over {args.connections} "
        f"TLS connections in {elapsed:.2f} s = {len(lat) / elapsed:.0f} msg/s"
    )
    print(
        f"per-message latency (MAIL..250): p50 {statistics.median(lat) * 1000:.1f} ms, "
        f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms; queued rows: {stored}"
    )
    return 0 if stored == len(lat) else 1


async def _drive(
    *, port: int, address: str, password: str, total: int, connections: int, size: int
) -> tuple[float, list[float]]:
    import aiosmtplib

    from mailplane.tls import client_context_insecure

    context = client_context_insecure()
    header = f"From: <{address}>\r\nTo: <rcpt@example.org>\r\nSubject: bench\r\n\r\n"
    line = "x" * 78 + "\r\n"
    body = line * max(1, (size - len(header)) // len(line))
    raw = (header + body).encode()
    remaining = total
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, use_tls=True, tls_context=context, timeout=60
        )
        await client.connect()
        await client.login(address, password)
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await client.sendmail(address, ["rcpt@example.org"], raw)
            latencies.append(time.perf_counter() - start)
        await client.quit()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - start, latencies


if __name__ == "__main__":
    sys.exit(main())
