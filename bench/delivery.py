"""Delivery benchmark: messages/s from a pre-filled queue to local MX sinks.

10 KB messages, 100 destination domains (MX records on a local dnslib server pointing at
4 sinks on their own 127.x addresses, in separate processes), delivered by worker processes
each running `DeliveryWorker().run_forever()` (the service loop), with and without DKIM.
Throw-away SQLite data directory unless DATABASE_URL is set (PostgreSQL also allows several
workers). Prints msg/s and the workers' CPU time per message (user + system), which is
steadier than msg/s on a shared machine.

    .venv/bin/python bench/delivery.py [--messages 3000] [--mode both|dkim|plain]
                                       [--sink aiosmtpd|smtp-sink] [--workers N]
                                       [--postfix]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]
SINKS = [f"127.66.0.{n}" for n in range(2, 6)]
DOMAINS = 100


def _sink_process(port: int, counter: multiprocessing.Value, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """aiosmtpd sinks that count messages and drop them (the far end's cost, not ours)."""
    from aiosmtpd.smtp import SMTP

    class Count:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            with counter.get_lock():
                counter.value += 1
            return "250 2.0.0 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for address in SINKS:
            await loop.create_server(
                lambda: SMTP(Count(), decode_data=False, hostname="sink"), address, port
            )
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _worker_process() -> None:
    """One delivery service, as `python -m mailplane.delivery` runs it (forked after the
    settings were pointed at the local DNS server and sinks); SIGTERM stops it."""
    from mailplane.delivery.worker import DeliveryWorker

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await DeliveryWorker().run_forever(stop)

    asyncio.run(run())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


POSTFIX_SETTINGS = (
    "myhostname = bench.local",
    "inet_interfaces = loopback-only",
    "mydestination =",
    "relayhost =",
    "mynetworks = 127.0.0.0/8",
    "default_process_limit = 200",
    "smtp_destination_concurrency_limit = 25",
    "default_destination_concurrency_limit = 25",
    "smtp_tls_security_level = none",
    "smtpd_tls_security_level = none",
    "in_flow_delay = 0",
    "smtpd_client_connection_rate_limit = 0",
    "smtpd_client_restrictions = check_client_access static:HOLD",  # queue, don't send yet
    "maillog_file = /var/log/postfix-bench.log",
    "compatibility_level = 3.6",
)


def _postfix_delivery(port: int, count: int) -> float:
    """Postfix (Debian) delivering the same pre-filled queue to the same sinks: the same
    100 domains (transport_maps sends d<i>.bench where its MX would), 10 KB messages,
    injected on hold (an access table answering HOLD), then released at once and timed
    until the queue is empty. Concurrency as ours: 100 smtp processes; Postfix counts per
    next hop, so 25 for each of the 4 sinks (ours: at most 5 per domain, 100 in all).
    No DKIM: Postfix signs only through a milter. Needs root; main.cf is restored."""
    conf_dir = Path("/etc/postfix")
    main_cf = conf_dir / "main.cf"
    if not main_cf.exists() or not main_cf.stat().st_size:
        main_cf.write_text(Path("/usr/share/postfix/main.cf.debian").read_text())
    saved = main_cf.read_text()
    transport = conf_dir / "mailplane_bench_transport"
    transport.write_text(
        "".join(f"d{i}.bench smtp:[{SINKS[i % len(SINKS)]}]:{port}\n" for i in range(DOMAINS))
    )

    def run(*argv: str) -> str:
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def queued() -> int:
        return len(run("postqueue", "-j").splitlines())

    try:
        run("postmap", str(transport))
        run("postconf", "-e", *POSTFIX_SETTINGS, f"transport_maps = hash:{transport}")
        subprocess.run(["postfix", "stop"], capture_output=True)
        run("postfix", "start")
        run("postsuper", "-d", "ALL")
        per_domain = count // DOMAINS
        for i in range(DOMAINS):
            source = f"-l 10240 -m {per_domain} -s 10 -N -f bench@bench-sender.test"
            run("smtp-source", *source.split(), "-t", f"user@d{i}.bench", "127.0.0.1:25")
        deadline = time.monotonic() + 120
        while queued() < per_domain * DOMAINS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Postfix holds only {queued()} messages")
            time.sleep(0.2)
        began = time.perf_counter()
        run("postsuper", "-H", "ALL")  # hold -> deferred queue...
        run("postqueue", "-f")  # ...and a queue run now, not after queue_run_delay
        while queued():
            time.sleep(0.05)
        return per_domain * DOMAINS / (time.perf_counter() - began)
    finally:
        subprocess.run(["postfix", "stop"], capture_output=True)
        main_cf.write_text(saved)


def _body(n: int, domain: str) -> bytes:
    head = (
        f"From: Bench <bench@bench-sender.test>\r\nTo: <user{n}@{domain}>\r\n"
        f"Subject: bench {n}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{n}.bench@bench-sender.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    return head + line * ((10 * 1024 - len(head)) // len(line) + 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="delivery worker processes (more than one needs PostgreSQL: SKIP LOCKED claims)",
    )
    parser.add_argument(
        "--postfix",
        action="store_true",
        help="then let Postfix (apt-get install postfix; root) deliver the same load to the "
        "same sinks, and print our rates as a ratio to it",
    )
    parser.add_argument("--mode", choices=("both", "dkim", "plain"), default="both")
    parser.add_argument(
        "--sink",
        choices=("aiosmtpd", "smtp-sink"),
        default="aiosmtpd",
        help="aiosmtpd: Python sinks in one process (counting); smtp-sink: Postfix's C sink, "
        "the one postfix-reference.sh relays to (completion read from the queue instead)",
    )
    args = parser.parse_args()
    if args.workers > 1 and not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        parser.error("--workers > 1 needs DATABASE_URL=postgres://... (SQLite: one worker)")
    os.environ.setdefault("MAILPLANE_DATA_DIR", tempfile.mkdtemp(prefix="mailplane-bench-"))
    os.environ.setdefault("MAILPLANE_SECRET_KEY", "bench-secret")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")
    os.environ.setdefault("MAILPLANE_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from tests.support.dns_server import DnsServer
    from tests.support.smtp_sink import free_port

    from mailplane.domains.models import Domain
    from mailplane.domains.services import domain_create
    from mailplane.queue.models import QueuedRecipient
    from mailplane.queue.services import message_enqueue
    from mailplane.tenancy.services import organization_create

    call_command("migrate", interactive=False, verbosity=0)
    port = free_port()
    counter = multiprocessing.Value("q", 0)
    ready = multiprocessing.Event()
    sinks = multiprocessing.Process(target=_sink_process, args=(port, counter, ready), daemon=True)
    c_sinks: list[subprocess.Popen[bytes]] = []
    if args.sink == "aiosmtpd":
        sinks.start()
        ready.wait(10)
    else:
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        for address in SINKS:
            c_sinks.append(
                subprocess.Popen(
                    ["smtp-sink", *user, f"{address}:{port}", "500"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for address in SINKS:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((address, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
    dns = DnsServer().start()
    for i in range(DOMAINS):
        dns.mx(f"d{i}.bench", f"mx{i % len(SINKS)}.sinks.bench", preference=10)
    for i, address in enumerate(SINKS):
        dns.a(f"mx{i}.sinks.bench", address)
    # Zone apexes, as every real zone has: their SOA rides on negative answers (the sinks'
    # AAAA "no such record"), which makes those cacheable (RFC 2308 §5).
    dns.soa("sinks.bench")
    for i in range(DOMAINS):
        dns.soa(f"d{i}.bench")
    settings.MAILPLANE = {
        **settings.MAILPLANE,
        "DNS_RESOLVER": dns.address,
        "DELIVERY_MX_PORT": port,
        "DELIVERY_SMTP_TIMEOUT": 30.0,
    }
    org = organization_create(name="Bench", owner_email="b@bench.test", plan="enterprise")
    relay = org.relay_servers.first()
    domain = domain_create(organization=org, name="bench-sender.test", relay_server=relay)
    results: list[tuple[str, int, float]] = []
    modes = [("with DKIM", True), ("without DKIM", False)]
    modes = [m for m in modes if args.mode == "both" or (args.mode == "dkim") == m[1]]
    for label, dkim_on in modes:
        if not dkim_on:
            Domain.objects.filter(pk=domain.pk).update(dkim_selector="")
            domain.refresh_from_db()
        fill = time.perf_counter()
        for n in range(args.messages):
            d = f"d{n % DOMAINS}.bench"
            message_enqueue(
                organization=org,
                mail_from="bench@bench-sender.test",
                recipients=[f"user{n}@{d}"],
                raw=_body(n, d),
                relay_server=relay,
                domain=domain,
            )
        fill = time.perf_counter() - fill
        connection.close()
        start_count = counter.value
        start_delivered = QueuedRecipient.objects.filter(status="delivered").count()
        connection.close()

        def delivered() -> int:
            if args.sink == "aiosmtpd":
                return int(counter.value - start_count)  # noqa: B023
            return QueuedRecipient.objects.filter(status="delivered").count() - start_delivered  # noqa: B023

        workers = [
            multiprocessing.Process(target=_worker_process, daemon=True)
            for _ in range(args.workers)
        ]
        began = time.perf_counter()
        for proc in workers:
            proc.start()
        poll = 0.01 if args.sink == "aiosmtpd" else 0.05
        while delivered() < args.messages:
            time.sleep(poll)
        elapsed = time.perf_counter() - began
        connection.close()
        cpu = sum(_cpu_seconds(proc.pid) for proc in workers if proc.pid)
        for proc in workers:
            if proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in workers:
            proc.join(30)
        left = QueuedRecipient.objects.exclude(status="delivered").count()
        rate = args.messages / elapsed
        print(
            f"{label}: {args.messages} msgs in {elapsed:.2f}s = {rate:.0f} msg/s "
            f"(queue fill {fill:.1f}s; not delivered afterwards: {left}; "
            f"worker CPU {1000 * cpu / args.messages:.2f} ms/msg)",
            flush=True,
        )
        results.append((label, args.messages, rate))
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, database {db}"
    )
    print(f"sinks: {args.sink} on {', '.join(SINKS)}")
    if args.postfix:
        rate = _postfix_delivery(port, args.messages)
        print(f"Postfix, same queue and sinks, no DKIM: {rate:.0f} msg/s", flush=True)
        for label, _, ours in results:
            print(f"ratio {label}: {ours / rate:.2f}x Postfix")
    dns.stop()
    if sinks.is_alive():
        sinks.terminate()
    for proc in c_sinks:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
