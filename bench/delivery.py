"""Delivery benchmark: messages/s from a pre-filled queue to local MX sinks.

10 KB messages, 100 destination domains (MX records on a local dnslib server pointing at
4 sinks on their own 127.x addresses, in separate processes), delivered by worker processes
each running `DeliveryWorker().run_forever()` (the service loop), with and without DKIM.
Throw-away SQLite data directory unless DATABASE_URL is set (PostgreSQL also allows several
workers). Prints msg/s and the workers' CPU time per message (user + system), which is
steadier than msg/s on a shared machine.

`--postfix` (root; apt-get install postfix opendkim) then lets a throw-away Postfix
(bench/peers.py: `postfix -c DIR`, own queue, 127.77.0.2) deliver the same messages to the
same sinks, without DKIM and with OpenDKIM (a throw-away `opendkim -x FILE`, Debian's) signing
as its milter with our domain's key, and prints our rates and CPU per message as ratios.

    .venv/bin/python bench/delivery.py [--messages 3000] [--mode both|dkim|plain]
                                       [--sink aiosmtpd|smtp-sink] [--workers N]
                                       [--postfix] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def _postfix_delivery(
    port: int, count: int, *, dkim: tuple[str, str, str] | None = None
) -> dict[str, float]:
    """Postfix (Debian), a throw-away instance (bench/peers.py), delivering the same
    messages to the same sinks: the same 100 domains (transport_maps sends d<i>.bench where
    its MX would), the same 10 KB bodies (`_body`), injected over SMTP on hold (an access
    table answering HOLD), then released at once (`postsuper -H ALL; postqueue -f`) and
    timed until the queue is empty. Concurrency as ours: 100 smtp processes; Postfix counts
    per next hop, so 25 for each of the 4 sinks (ours: at most 5 per domain, 100 in all).

    With `dkim` = (domain, selector, private key PEM) the injection goes through OpenDKIM
    as an smtpd milter (relaxed/relaxed, the same key as ours). Postfix signs only there,
    at ingest: milters do not run on mail re-queued with `postsuper -r` (checked), so the
    signing cannot fall inside the release window. What is returned lets the caller charge
    it: injection seconds and CPU (Postfix tree, OpenDKIM) as well as release seconds/CPU."""
    from bench.peers import (
        POSTFIX_ADDRESS,
        OpenDKIM,
        Postfix,
        cpu_seconds,
        free_port,
        wait_listening,
    )

    milter = None
    if dkim:
        milter = OpenDKIM(domain=dkim[0], selector=dkim[1], private_key_pem=dkim[2]).start()
    inject = free_port(POSTFIX_ADDRESS)
    transport = Path(tempfile.mkdtemp(prefix="mailplane-bench-transport-")) / "transport"
    transport.parent.chmod(0o755)
    transport.write_text(
        "".join(f"d{i}.bench smtp:[{SINKS[i % len(SINKS)]}]:{port}\n" for i in range(DOMAINS))
    )
    settings = {
        "transport_maps": f"texthash:{transport}",
        "relay_domains": ", ".join(f"d{i}.bench" for i in range(DOMAINS)),
        "smtp_destination_concurrency_limit": "25",
        "default_destination_concurrency_limit": "25",
        "smtp_connection_cache_on_demand": "yes",
        "smtpd_client_restrictions": "check_client_access static:HOLD",  # queue, don't send
        "smtpd_relay_restrictions": "permit_mynetworks, reject",
    }
    if milter:
        settings |= {
            "smtpd_milters": milter.milter,
            "milter_default_action": "tempfail",  # unsigned mail must not slip through
        }
    postfix = Postfix(settings, [f"{POSTFIX_ADDRESS}:{inject} inet n - n - - smtpd"]).start()
    try:
        wait_listening(POSTFIX_ADDRESS, inject, what="postfix")
        pids = postfix.pids()
        cpu0 = cpu_seconds(pids), cpu_seconds(milter.pids() if milter else [])
        began = time.perf_counter()
        asyncio.run(_inject(POSTFIX_ADDRESS, inject, count))
        postfix.wait_queued(count)
        inject_s = time.perf_counter() - began
        cpu1 = cpu_seconds(postfix.pids()), cpu_seconds(milter.pids() if milter else [])
        if milter:  # the held copies must carry our selector's signature
            queue_id = json.loads(postfix.run("postqueue", "-j").splitlines()[0])["queue_id"]
            head = postfix.run("postcat", "-h", "-q", queue_id)
            if dkim and f"s={dkim[1]};" not in head.replace(" ", ""):
                raise RuntimeError(f"OpenDKIM did not sign: {head[:400]} (see {milter.dir})")
        began = time.perf_counter()
        postfix.run("postsuper", "-H", "ALL")  # hold -> deferred queue...
        postfix.run("postqueue", "-f")  # ...and a queue run now, not after queue_run_delay
        postfix.wait_empty()
        release_s = time.perf_counter() - began
        cpu2 = cpu_seconds(postfix.pids())
        return {
            "inject_s": inject_s,
            "release_s": release_s,
            "inject_cpu": cpu1[0] - cpu0[0],
            "milter_cpu": cpu1[1] - cpu0[1],
            "release_cpu": cpu2 - cpu1[0],
        }
    finally:
        postfix.remove()
        if milter:
            milter.remove()


async def _inject(host: str, port: int, count: int) -> None:
    """The same messages as ours, over 10 SMTP sessions (aiosmtplib)."""
    import aiosmtplib

    remaining = list(range(count))

    async def session() -> None:
        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=120)
        await client.connect()
        while remaining:
            n = remaining.pop()
            d = f"d{n % DOMAINS}.bench"
            await client.sendmail("bench@bench-sender.test", [f"user{n}@{d}"], _body(n, d))
        await client.quit()

    await asyncio.gather(*(session() for _ in range(10)))


def _postfix_report(
    port: int, count: int, ours: list[tuple[str, int, float, float]], dkim: tuple[str, str, str]
) -> None:
    """Postfix without and with OpenDKIM on the same load; ratios to our runs.

    Postfix signs at ingest (see _postfix_delivery), so its with-DKIM rate charges the
    release time plus what signing added to the injection (with-milter minus without-milter
    injection seconds, same client and sessions); CPU per message is charged the same way
    (Postfix processes and OpenDKIM), which is the steadier figure on a busy machine."""
    plain = _postfix_delivery(port, count)
    plain_rate = count / plain["release_s"]
    print(
        f"Postfix, same queue and sinks, no DKIM: {plain_rate:.0f} msg/s "
        f"(CPU {1000 * plain['release_cpu'] / count:.2f} ms/msg; injection "
        f"{plain['inject_s']:.1f}s not counted)",
        flush=True,
    )
    signed = _postfix_delivery(port, count, dkim=dkim)
    added_s = max(0.0, signed["inject_s"] - plain["inject_s"])
    added_cpu = signed["milter_cpu"] + max(0.0, signed["inject_cpu"] - plain["inject_cpu"])
    dkim_rate = count / (signed["release_s"] + added_s)
    dkim_cpu = signed["release_cpu"] + added_cpu
    print(
        f"Postfix + OpenDKIM milter, same key: {dkim_rate:.0f} msg/s = {count} / (release "
        f"{signed['release_s']:.2f}s + signing's added injection time {added_s:.2f}s); CPU "
        f"{1000 * dkim_cpu / count:.2f} ms/msg (OpenDKIM "
        f"{1000 * signed['milter_cpu'] / count:.2f})",
        flush=True,
    )
    if added_s < 0.2 * signed["release_s"]:
        print(
            "  (signing's added injection time is small against the noise of two injections "
            "on a busy machine: read the CPU ratio)"
        )
    for label, _, rate, cpu in ours:
        theirs_rate, theirs_cpu = (
            (dkim_rate, dkim_cpu) if label == "with DKIM" else (plain_rate, plain["release_cpu"])
        )
        peer = "Postfix + OpenDKIM" if label == "with DKIM" else "Postfix"
        print(
            f"RATIO {label}: {rate / theirs_rate:.2f}x {peer} msg/s; "
            f"CPU per message {cpu / theirs_cpu:.2f}x theirs (lower is better)"
        )


def _body(n: int, domain: str) -> bytes:
    head = (
        f"From: Bench <bench@bench-sender.test>\r\nTo: <user{n}@{domain}>\r\n"
        f"Subject: bench {n}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{n}.bench@bench-sender.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    return head + line * ((10 * 1024 - len(head)) // len(line) + 1)


def _pools_set(org: object, *, on: bool) -> None:
    """The account's mail from a pool of two warming addresses whose caps never bind (the
    bookkeeping without the holding), or from the relay's own address."""
    from mailplane.pools.models import IpPool, PoolAssignment
    from mailplane.pools.services import pool_address_add, pool_assign, pool_create

    PoolAssignment.objects.all().delete()
    if not on:
        return
    pool = IpPool.objects.filter(name="bench").first()
    if pool is None:
        pool = pool_create(name="bench")
        pool.warmup_schedule = [{"daily": 10**9, "hourly": 10**9}]
        pool.save()
        for host in (10, 11):
            pool_address_add(
                pool=pool, address=f"127.0.9.{host}", helo_name=f"out{host}.bench", warmup=True
            )
    pool_assign(pool=pool, organization=org)  # type: ignore[arg-type]


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
    parser.add_argument("--quick", action="store_true", help="500 messages")
    parser.add_argument(
        "--pools",
        choices=("off", "on", "both"),
        default="off",
        help="on: the account's mail leaves from an IP pool of two warming addresses (caps too "
        "high to bind), so every batch pays for the pool choice and the warm-up reservation; "
        "both: each mode without, then with (issue 13: within 10 %%)",
    )
    args = parser.parse_args()
    if args.quick:
        args.messages = 500
    if args.postfix:
        from bench.peers import require_programs, require_root

        require_root("--postfix")
        require_programs("postfix", "opendkim")
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
        # The 100 domains' MX hosts are all under sinks.bench: one politeness group
        # (delivery/politeness.py), whose default cap (20 connections per source address)
        # would bind before the worker's concurrency does and measure the cap, not the
        # code. MAILPLANE_BENCH_POLITE_CONNECTIONS=20 measures the default.
        "DELIVERY_POLITENESS_MAX_CONNECTIONS": int(
            os.environ.get("MAILPLANE_BENCH_POLITE_CONNECTIONS", "100")
        ),
    }
    org = organization_create(name="Bench", owner_email="b@bench.test", plan="enterprise")
    relay = org.relay_servers.first()
    domain = domain_create(organization=org, name="bench-sender.test", relay_server=relay)
    dkim_key = (domain.name, domain.dkim_selector, domain.dkim_private_key)
    results: list[tuple[str, int, float, float]] = []
    modes = [("with DKIM", True), ("without DKIM", False)]
    modes = [m for m in modes if args.mode == "both" or (args.mode == "dkim") == m[1]]
    pooled = {"off": [False], "on": [True], "both": [False, True]}[args.pools]
    runs = [(f"{label}{', pools + warm-up' if p else ''}", dkim_on, p)
            for label, dkim_on in modes for p in pooled]  # fmt: skip
    for label, dkim_on, with_pools in runs:
        _pools_set(org, on=with_pools)
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
        if with_pools:  # proof the bookkeeping ran: every message reserved on an address
            from django.db.models import Sum

            from mailplane.pools.models import AddressUsage

            reserved = AddressUsage.objects.aggregate(n=Sum("sent"))["n"] or 0
            print(f"  pool addresses reserved {reserved} sends so far", flush=True)
        rate = args.messages / elapsed
        print(
            f"{label}: {args.messages} msgs in {elapsed:.2f}s = {rate:.0f} msg/s "
            f"(queue fill {fill:.1f}s; not delivered afterwards: {left}; "
            f"worker CPU {1000 * cpu / args.messages:.2f} ms/msg)",
            flush=True,
        )
        results.append((label, args.messages, rate, cpu))
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, database {db}"
    )
    print(f"sinks: {args.sink} on {', '.join(SINKS)}")
    from bench.peers import rsa2048_sign_ms

    print(f"load {os.getloadavg()[0]:.1f}; openssl speed rsa2048: {rsa2048_sign_ms():.2f} ms/sig")
    if args.postfix:
        _postfix_report(port, args.messages, results, dkim_key)
    dns.stop()
    if sinks.is_alive():
        sinks.terminate()
    for proc in c_sinks:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
