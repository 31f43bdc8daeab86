"""IMAP benchmark: logins/s, FETCH of 1,000 headers, N concurrent IDLE connections (RSS).

Runs the real service (`python -m mailplane.imap`) as a child process against a throw-away
data directory, and drives it over implicit TLS from this process.

    .venv/bin/python bench/imap.py [--idle 1000] [--logins 300]
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import platform
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import bench_account, bench_django

PASSWORD = "Bench-Password-42!"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def setup(data_dir: Path, messages: int) -> tuple[str, int]:
    bench_django(env={"MAILPLANE_DATA_DIR": str(data_dir), "CELERY_BROKER_URL": "memory://"})
    from mailplane.mailboxes.models import Mailbox
    from mailplane.mailboxes.passwords import password_hash
    from mailplane.storage import maildir_deliver

    org, relay, domain = bench_account(plan="pro")
    hashed = password_hash(PASSWORD)
    mailbox, _idle = (
        Mailbox.objects.create(
            organization=org,
            domain=domain,
            relay_server=relay,
            local_part=local,
            address=f"{local}@bench.test",
            password=PASSWORD,
            password_hash=hashed,
        )
        for local in ("bench", "idle")
    )
    for n in range(messages):
        raw = (
            f"From: sender{n}@example.test\r\nTo: bench@bench.test\r\nSubject: message {n}\r\n"
            f"Message-ID: <{n}@bench.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\n"
            + "x" * 2000
            + "\r\n"
        ).encode()
        maildir_deliver(organization_id=org.pk, address=mailbox.address, raw=raw)
    return mailbox.address, org.pk


def bench_logins(port: int, address: str, total: int, threads: int) -> float:
    def one(_: int) -> None:
        with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=_client_ctx(), timeout=30) as c:
            c.login(address, PASSWORD)

    one(0)  # first login pays scrypt; the rest hit the verification cache
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(total)))
    return total / (time.perf_counter() - started)


def bench_fetch(port: int, address: str) -> tuple[float, int]:
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=_client_ctx(), timeout=120) as c:
        c.login(address, PASSWORD)
        c.select("INBOX")  # first select assigns UIDs to the delivered files
        c.close()
        c.select("INBOX")
        started = time.perf_counter()
        _, data = c.fetch("1:1000", "(UID RFC822.SIZE BODY.PEEK[HEADER])")
        elapsed = time.perf_counter() - started
    return elapsed, sum(1 for part in data if isinstance(part, tuple))


async def _idle_client(port: int, address: str, ready: asyncio.Event, seen: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx())
    await reader.readline()
    writer.write(f"a LOGIN {address} {PASSWORD}\r\n".encode())
    while not (await reader.readline()).startswith(b"a "):
        pass
    writer.write(b"b EXAMINE INBOX\r\nc IDLE\r\n")
    while not (await reader.readline()).startswith(b"+"):
        pass
    ready.set()
    while True:
        line = await reader.readline()
        if not line or line.endswith(b"EXISTS\r\n"):
            seen.append(time.perf_counter())
            break
    writer.write(b"DONE\r\nd LOGOUT\r\n")
    writer.close()


async def bench_idle(
    port: int, address: str, org_id: int, count: int, pid: int
) -> tuple[int, int, float, float, int]:
    from mailplane.storage import maildir_deliver

    rss_before = _rss_kib(pid)
    seen: list[float] = []
    events = [asyncio.Event() for _ in range(count)]
    tasks = []
    started = time.perf_counter()
    for n in range(count):
        tasks.append(asyncio.create_task(_idle_client(port, address, events[n], seen)))
        if n % 50 == 49:
            await asyncio.sleep(0.05)  # stay under the listen backlog during the ramp
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 300)
    setup_s = time.perf_counter() - started
    await asyncio.sleep(2)
    rss_idle = _rss_kib(pid)
    delivered = time.perf_counter()
    await asyncio.to_thread(
        maildir_deliver,
        organization_id=org_id,
        address=address,
        raw=b"Subject: wake up\r\n\r\nnew mail\r\n",
    )
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    last = max(seen) - delivered
    return rss_before, rss_idle, setup_s, last, len(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-imap-"))
    address, org_id = setup(data_dir, args.messages)
    port, starttls_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "MAILPLANE_IMAP_PORT": str(port),
        "MAILPLANE_IMAP_STARTTLS_PORT": str(starttls_port),
        "MAILPLANE_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen([sys.executable, "-m", "mailplane.imap"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        print(
            f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}"
        )
        cpu_before = _cpu_s(server.pid)
        rate = bench_logins(port, address, args.logins, args.threads)
        cpu_ms = (_cpu_s(server.pid) - cpu_before) * 1000 / (args.logins + 1)
        print(
            f"logins/s (TLS connect + LOGIN + LOGOUT, {args.threads} threads, cached "
            f"verification): {rate:.0f}; server CPU {cpu_ms:.1f} ms per login"
        )
        elapsed, got = bench_fetch(port, address)
        print(
            f"FETCH 1:1000 (UID RFC822.SIZE BODY.PEEK[HEADER]): {got} messages in "
            f"{elapsed * 1000:.0f} ms"
        )
        # IDLE clients watch a second, small mailbox (a typical INBOX-sized one would
        # measure the scan, not the connections).
        before, idle, setup_s, last, notified = asyncio.run(
            bench_idle(port, "idle@bench.test", org_id, args.idle, server.pid)
        )
        print(
            f"IDLE: {args.idle} connections set up in {setup_s:.1f} s; server RSS "
            f"{before / 1024:.0f} MiB before, {idle / 1024:.0f} MiB with all idling "
            f"({(idle - before) / args.idle:.0f} KiB per connection)"
        )
        print(
            f"IDLE: one delivery announced to {notified}/{args.idle} clients, the last "
            f"after {last * 1000:.0f} ms"
        )
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
