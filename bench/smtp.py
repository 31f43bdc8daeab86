"""SMTP ingest: messages/s accepted, the same client against Mailplane and (--postfix) Postfix.

Runs the real service (`python -m mailplane.smtp submission|mx`) as its own process on a
fresh embedded data directory (SQLite; or PostgreSQL with `--database-url`, which must name
an empty throw-away database), creates one mailbox, then drives it with aiosmtplib from this
process. Two kinds of ingest (`--mode`):

- `tls`: our submission port (implicit TLS, port-465 style, AUTH PLAIN once per connection).
  Every 250 means the message is on the outbound queue and its Sent copy on disk (fsync'd).
- `plain`: our inbound MX port (no TLS, no AUTH; SPF/DMARC checked against a local DNS
  server whose zones answer "none"), every 250 means the copy is in the Maildir (fsync'd).

`--postfix` (root; apt-get install postfix dovecot-core) then runs the same client, message,
size and concurrency against a throw-away Postfix (bench/peers.py: `postfix -c DIR`, its own
queue, 127.77.0.2): `tls` against smtpd with smtpd_tls_wrappermode = yes and
smtpd_tls_security_level = encrypt, AUTH through a throw-away Dovecot's SASL socket
(smtpd_sasl_type = dovecot), same certificate and key as ours; `plain` against a plain
smtpd accepting for the hosted domain (virtual_mailbox_domains, the recipient listed). Each
250 from Postfix means cleanup(8) fsync'd the queue file; the messages are put on hold
(an access table answering HOLD) so that no delivery runs while ingest is measured, and our
side does no delivery either. It prints both rates, the ratio, and server CPU per message.

Each ingest runs twice: closed loop (every connection sends back to back: throughput and
MAIL..250 latency) and open loop (messages arrive at a fixed rate, `--rate`, the same for both
servers; default half the slower server's closed-loop rate; each waits for a free connection,
so latency runs from its scheduled arrival to the 250 and includes queueing).

    .venv/bin/python bench/smtp.py [--messages 5000] [--connections 50] [--size 10240]
        [--mode tls|plain|both] [--postfix] [--rate N] [--quick]
        [--database-url postgres://postgres@127.0.0.1/bench_smtp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import bench_account, bench_django
from bench.peers import (
    POSTFIX_ADDRESS,
    Dovecot,
    Postfix,
    cpu_seconds,
    free_port,
    require_programs,
    require_root,
    rsa2048_sign_ms,
    wait_listening,
)

OURS = "127.77.0.5"  # our listeners' address
PASSWORD = "Sm7p-Ingest-Pw0rd!"
SENDER_DOMAIN = "peer-sender.test"  # the MX's foreign sender: SPF and DMARC "none"


@dataclass
class Target:
    """Where the client connects, and how."""

    name: str
    host: str
    port: int
    tls: bool
    login: tuple[str, str] | None
    mail_from: str
    rcpt: str
    pids: Callable[[], list[int]]


@dataclass
class Result:
    count: int
    elapsed: float
    latencies: list[float]
    cpu: float
    client_cpu: float = 0.0  # this process (the client, and the DNS server thread)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        return lat[max(0, int(len(lat) * q) - 1)] * 1000


def message(mail_from: str, rcpt: str, size: int) -> bytes:
    header = (
        f"From: <{mail_from}>\r\nTo: <{rcpt}>\r\nSubject: bench\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@peer-bench>\r\n\r\n"
    )
    line = "x" * 78 + "\r\n"
    return (header + line * max(1, (size - len(header)) // len(line))).encode()


async def _connect(target: Target) -> object:
    import aiosmtplib

    from mailplane.tls import client_context_insecure

    client = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        use_tls=target.tls,
        start_tls=False,
        tls_context=client_context_insecure() if target.tls else None,
        timeout=120,
    )
    await client.connect()
    if target.login:
        await client.login(*target.login)
    return client


async def closed_loop(target: Target, *, total: int, connections: int, size: int) -> Result:
    """`connections` sessions sending back to back until `total` messages are accepted."""
    raw = message(target.mail_from, target.rcpt, size)
    remaining = total
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        client = await _connect(target)
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await client.sendmail(target.mail_from, [target.rcpt], raw)  # type: ignore[attr-defined]
            latencies.append(time.perf_counter() - start)
        await client.quit()  # type: ignore[attr-defined]

    cpu = cpu_seconds(target.pids())
    client = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    return Result(
        total,
        elapsed,
        latencies,
        cpu_seconds(target.pids()) - cpu,
        time.process_time() - client,
    )


async def open_loop(
    target: Target, *, total: int, connections: int, size: int, rate: float
) -> Result:
    """Message i arrives at start + i/rate and takes the next free session (of
    `connections`, logged in beforehand); its latency runs from arrival to 250, so a server
    that falls behind is charged for the wait (no coordinated omission)."""
    raw = message(target.mail_from, target.rcpt, size)
    pool: asyncio.Queue[object] = asyncio.Queue()
    for client in await asyncio.gather(*(_connect(target) for _ in range(connections))):
        pool.put_nowait(client)
    latencies: list[float] = []

    async def one(arrival: float) -> None:
        client = await pool.get()
        try:
            await client.sendmail(target.mail_from, [target.rcpt], raw)  # type: ignore[attr-defined]
        finally:
            pool.put_nowait(client)
        latencies.append(time.perf_counter() - arrival)

    cpu = cpu_seconds(target.pids())
    start = time.perf_counter()
    tasks = []
    for i in range(total):
        arrival = start + i / rate
        delay = arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(arrival)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(target.pids()) - cpu
    while not pool.empty():
        await pool.get_nowait().quit()  # type: ignore[attr-defined]
    return Result(total, elapsed, latencies, cpu)


def _with_children(pid: int) -> list[int]:
    """`pid` and the listener processes it started (MAILPLANE_SMTP_PROCESSES > 1)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def _start_ours(kind: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, "-m", "mailplane.smtp", kind], env=env)
    try:
        wait_listening(OURS, port, what=f"mailplane {kind}")
    except RuntimeError:
        server.terminate()
        raise
    return server


def _postfix(cert: Path, key: Path, address: str, sasl_socket: Path | None) -> Postfix:
    plain_port, tls_port = free_port(POSTFIX_ADDRESS), free_port(POSTFIX_ADDRESS)
    rcpts = Path(tempfile.mkdtemp(prefix="mailplane-bench-rcpts-")) / "virtual"
    rcpts.write_text(f"{address} ok\n")
    rcpts.parent.chmod(0o755)
    tls = [
        "-o smtpd_tls_wrappermode=yes",
        "-o smtpd_tls_security_level=encrypt",
        f"-o smtpd_tls_chain_files={key},{cert}",
        "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
    ]
    if sasl_socket:
        tls += [
            "-o smtpd_sasl_auth_enable=yes",
            "-o smtpd_sasl_type=dovecot",
            f"-o smtpd_sasl_path={sasl_socket}",
        ]
    postfix = Postfix(
        {
            "virtual_mailbox_domains": address.split("@", 1)[1],
            "virtual_mailbox_maps": f"texthash:{rcpts}",
            "mynetworks": "127.255.255.254/32",  # the client is not trusted: AUTH relays
            "smtpd_relay_restrictions": "reject_unauth_destination",
            # Queue, but do not deliver: ingest is what is measured (our side delivers
            # nothing either).
            "smtpd_client_restrictions": "check_client_access static:HOLD",
            "smtpd_tls_loglevel": "0",
        },
        [
            f"{POSTFIX_ADDRESS}:{plain_port} inet n - n - - smtpd",
            f"{POSTFIX_ADDRESS}:{tls_port} inet n - n - - smtpd " + " ".join(tls),
        ],
    )
    postfix.plain_port, postfix.tls_port = plain_port, tls_port  # type: ignore[attr-defined]
    return postfix


def _report(label: str, r: Result, conns: int) -> None:
    print(
        f"  {label}: {r.count} msgs in {r.elapsed:.2f} s = {r.rate:.0f} msg/s; "
        f"latency p50 {statistics.median(r.latencies) * 1000:.1f} ms, p99 {r.pct(0.99):.1f} ms; "
        f"server CPU {r.cpu * 1000 / r.count:.2f} ms/msg"
        + (f", client CPU {r.client_cpu * 1000 / r.count:.2f} ms/msg" if r.client_cpu else ""),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--mode", choices=("tls", "plain", "both"), default="tls")
    parser.add_argument("--postfix", action="store_true", help="same work against Postfix")
    parser.add_argument("--rate", type=float, default=0, help="open-loop msg/s (default: auto)")
    parser.add_argument(
        "--open-messages", type=int, default=0, help="open-loop messages (default: --messages)"
    )
    parser.add_argument("--quick", action="store_true", help="500 messages, 20 connections")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.connections = 500, 20
    if args.postfix:
        require_root("--postfix")
        require_programs("postfix", "dovecot")

    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-smtp-"))
    ports = {
        "MAILPLANE_SMTP_PORT": free_port(OURS),
        "MAILPLANE_SUBMISSION_PORT": free_port(OURS),
        "MAILPLANE_MX_PORT": free_port(OURS),
    }
    from tests.support.dns_server import DnsServer

    dns = DnsServer(host=OURS).start()
    # Zones with SOAs, as real ones have: the negative answers (no SPF, no DMARC record)
    # then cache (RFC 2308 §5) instead of being asked for every message.
    dns.soa(SENDER_DOMAIN)
    env = {
        **{k: str(v) for k, v in ports.items()},
        "MAILPLANE_DATA_DIR": str(data_dir),
        "MAILPLANE_LOG_LEVEL": "WARNING",
        "MAILPLANE_SMTP_BIND": OURS,
        "MAILPLANE_DNS_RESOLVER": dns.address,
        "CELERY_BROKER_URL": "memory://",
    }
    bench_django(env=env, database_url=args.database_url or None)
    from django.db import connection

    from mailplane.mailboxes.services import mailbox_create, mailbox_validate
    from mailplane.queue.models import OutboundMessage
    from mailplane.tls import tls_paths

    org, _relay, domain = bench_account(plan="enterprise")
    spec = mailbox_validate(
        organization=org, data={"email": "bench", "domain": domain.pk, "password": PASSWORD}
    )
    mailbox = mailbox_create(organization=org, spec=spec)
    address = mailbox.address
    cert, key = tls_paths(data_dir=data_dir)
    connection.close()

    postfix = dovecot = None
    if args.postfix:
        dovecot = Dovecot(users={address: PASSWORD}, cert=cert, key=key, protocols="none")
        dovecot.start()
        postfix = _postfix(cert, key, address, dovecot.auth_socket).start()
        wait_listening(POSTFIX_ADDRESS, postfix.tls_port, what="postfix")  # type: ignore[attr-defined]

    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, "
        f"database {connection.vendor}"
    )
    print(f"openssl speed rsa2048: {rsa2048_sign_ms():.2f} ms per signature")
    modes = ["plain", "tls"] if args.mode == "both" else [args.mode]
    failed = False
    try:
        for mode in modes:
            kind = "mx" if mode == "plain" else "submission"
            port = ports["MAILPLANE_MX_PORT" if mode == "plain" else "MAILPLANE_SMTP_PORT"]
            server = _start_ours(kind, {**os.environ, **env}, port)
            targets = [
                Target(
                    "mailplane",
                    OURS,
                    port,
                    mode == "tls",
                    (address, PASSWORD) if mode == "tls" else None,
                    address if mode == "tls" else f"sender@{SENDER_DOMAIN}",
                    "rcpt@example.org" if mode == "tls" else address,
                    lambda: _with_children(server.pid),  # noqa: B023
                )
            ]
            if postfix:
                targets.append(
                    Target(
                        "postfix",
                        POSTFIX_ADDRESS,
                        postfix.tls_port if mode == "tls" else postfix.plain_port,  # type: ignore[attr-defined]
                        mode == "tls",
                        (address, PASSWORD) if mode == "tls" else None,
                        address if mode == "tls" else f"sender@{SENDER_DOMAIN}",
                        "rcpt@example.org" if mode == "tls" else address,
                        postfix.pids,
                    )
                )
            what = "submission, implicit TLS + AUTH" if mode == "tls" else "MX port, plaintext"
            print(f"{what}: {args.messages} x {args.size} B over {args.connections} connections")
            try:
                closed = {}
                for t in targets:
                    closed[t.name] = asyncio.run(
                        closed_loop(
                            t, total=args.messages, connections=args.connections, size=args.size
                        )
                    )
                    _report(f"{t.name} closed loop", closed[t.name], args.connections)
                rate = args.rate or 0.5 * min(r.rate for r in closed.values())
                n_open = args.open_messages or args.messages
                opened = {}
                for t in targets:
                    opened[t.name] = asyncio.run(
                        open_loop(
                            t,
                            total=n_open,
                            connections=args.connections,
                            size=args.size,
                            rate=rate,
                        )
                    )
                    _report(
                        f"{t.name} open loop at {rate:.0f} msg/s", opened[t.name], args.connections
                    )
            finally:
                server.terminate()
                server.wait(timeout=30)
            if mode == "tls":
                stored = OutboundMessage.objects.filter().count()
                connection.close()
            else:
                inbox = data_dir / "storage"
                stored = sum(
                    1 for p in inbox.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")
                )
            expect = args.messages + (args.open_messages or args.messages)
            print(f"  mailplane stored: {stored} (expected {expect})")
            failed |= stored < expect
            if postfix:
                held = postfix.queued()
                print(f"  postfix queued (on hold): {held}")
                ours, theirs = closed["mailplane"], closed["postfix"]
                p99_ours, p99_theirs = opened["mailplane"].pct(0.99), opened["postfix"].pct(0.99)
                print(
                    f"  RATIO {mode}: mailplane / postfix = {ours.rate / theirs.rate:.2f}x "
                    f"msg/s (closed loop); CPU per msg {ours.cpu / theirs.cpu:.2f}x; open-loop "
                    f"p99 {p99_ours:.0f} vs {p99_theirs:.0f} ms",
                    flush=True,
                )
                postfix.run("postsuper", "-d", "ALL")
    finally:
        if postfix:
            postfix.remove()
        if dovecot:
            dovecot.remove()
        dns.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
