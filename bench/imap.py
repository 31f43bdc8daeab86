"""IMAP benchmark: logins/s, FETCH of 1,000 headers, SEARCH, N concurrent IDLE (memory, announce).

Runs the real service (`python -m mailplane.imap`) as a child process against a throw-away
data directory, and drives it over implicit TLS from this process. `--dovecot` (root;
apt-get install dovecot-imapd) then runs the same client code against a throw-away Dovecot
(bench/peers.py: `dovecot -c FILE`, 127.77.0.3, same certificate and key as ours) holding
the same Maildir files (copied from ours before either server starts), and prints ratios.
Memory is summed over all of a server's processes (Dovecot: master, login, auth, imap,
imap-hibernate); IDLE clients idle 8 s before it is read, past Dovecot's hibernation timeout
(5 s). `--imaptest SECS` also runs imaptest's stress mode (Dovecot's own tester, built by
/work/shared/tools/imaptest/build.sh) against each for SECS seconds and prints its totals.

    .venv/bin/python bench/imap.py [--idle 1000] [--logins 300] [--dovecot] [--imaptest 60]
                                   [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import bench_account, bench_django
from bench.peers import (
    Dovecot,
    children_of,
    cpu_seconds,
    free_port,
    require_programs,
    require_root,
    rsa2048_sign_ms,
    rss_kib,
    wait_listening,
)

PASSWORD = "Bench-Password-42!"
OURS = "127.77.0.6"
IMAPTEST_BUILD = Path("/work/shared/tools/imaptest/build.sh")
IMAPTEST_MBOX = Path("/work/shared/tools/imaptest/gen_mbox.py")


@dataclass
class Server:
    """One IMAP server under test: where it listens, its processes, how mail reaches it."""

    name: str
    host: str
    port: int
    pids: Callable[[], list[int]]
    deliver: Callable[[str, bytes], object]  # (address, raw): a new message in the INBOX


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _message(n: int) -> bytes:
    return (
        f"From: sender{n}@example.test\r\nTo: bench@bench.test\r\nSubject: message {n}\r\n"
        f"Message-ID: <{n}@bench.test>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\n"
        + ("needle in the body\r\n" if n % 100 == 7 else "")
        + "x" * 2000
        + "\r\n"
    ).encode()


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
        maildir_deliver(organization_id=org.pk, address=mailbox.address, raw=_message(n))
    return mailbox.address, org.pk


def bench_logins(server: Server, address: str, total: int, threads: int) -> tuple[float, float]:
    """(logins/s, server CPU ms per login): new TLS connection + LOGIN + LOGOUT each."""

    def one(_: int) -> None:
        with imaplib.IMAP4_SSL(
            server.host, server.port, ssl_context=_client_ctx(), timeout=30
        ) as c:
            c.login(address, PASSWORD)

    one(0)  # the first login pays the password hash; the rest hit the verification cache
    cpu = cpu_seconds(server.pids())
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(total)))
    rate = total / (time.perf_counter() - started)
    return rate, (cpu_seconds(server.pids()) - cpu) * 1000 / total


def bench_fetch_search(server: Server, address: str) -> dict[str, float]:
    """Milliseconds for FETCH 1:1000 headers and three SEARCHes, one session."""
    out: dict[str, float] = {}
    with imaplib.IMAP4_SSL(server.host, server.port, ssl_context=_client_ctx(), timeout=300) as c:
        c.login(address, PASSWORD)
        c.select("INBOX")  # the first select assigns UIDs to the delivered files
        c.close()
        _, exists = c.select("INBOX")
        last = min(1000, int(exists[0] or 0))  # 1:1000, or all there are (Dovecot: BAD past it)
        fetch = f"1:{last}"
        for label, run in (
            (
                "FETCH 1:1000 (UID RFC822.SIZE BODY.PEEK[HEADER])",
                lambda: c.fetch(fetch, "(UID RFC822.SIZE BODY.PEEK[HEADER])"),
            ),
            ("FETCH again", lambda: c.fetch(fetch, "(UID RFC822.SIZE BODY.PEEK[HEADER])")),
            ('SEARCH SUBJECT "message 999"', lambda: c.search(None, "SUBJECT", '"message 999"')),
            ('SEARCH FROM "sender5"', lambda: c.search(None, "FROM", '"sender5"')),
            ('SEARCH BODY "needle" (reads every body)', lambda: c.search(None, "BODY", "needle")),
        ):
            started = time.perf_counter()
            typ, data = run()
            out[label] = (time.perf_counter() - started) * 1000
            if typ != "OK":
                raise RuntimeError(f"{server.name}: {label}: {typ} {data!r}")
            if label.startswith("FETCH 1:1000"):
                got = sum(1 for part in data if isinstance(part, tuple))
                out["fetched"] = got
            if "needle" in label:
                out["needle hits"] = len(data[0].split())
    return out


async def _idle_client(
    server: Server, address: str, ready: asyncio.Event, seen: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port, ssl=_client_ctx())

    async def until(prefix: bytes) -> None:
        last = b""
        while True:
            line = await reader.readline()
            if not line:
                raise RuntimeError(
                    f"{server.name} closed an IDLE client's connection waiting for {prefix!r} "
                    f"(last line {last!r})"
                )
            last = line
            if line.startswith(prefix):
                if prefix != b"+" and not line.startswith(prefix + b"OK"):
                    raise RuntimeError(f"{server.name}: {line!r}")
                return

    await reader.readline()
    writer.write(f"a LOGIN {address} {PASSWORD}\r\n".encode())
    await until(b"a ")
    writer.write(b"b EXAMINE INBOX\r\n")
    await until(b"b ")
    writer.write(b"c IDLE\r\n")
    await until(b"+")
    ready.set()
    while True:
        line = await reader.readline()
        if not line or line.endswith(b"EXISTS\r\n"):
            seen.append(time.perf_counter())
            break
    writer.write(b"DONE\r\nd LOGOUT\r\n")
    writer.close()


async def bench_idle(server: Server, address: str, count: int) -> dict[str, float]:
    # One login first, so that the ramp hits the verification cache (ours) / auth cache
    # (Dovecot's) instead of hashing the password once per client.
    def warm() -> None:
        with imaplib.IMAP4_SSL(server.host, server.port, ssl_context=_client_ctx()) as c:
            c.login(address, PASSWORD)

    await asyncio.to_thread(warm)
    rss_before = rss_kib(server.pids())
    seen: list[float] = []
    events = [asyncio.Event() for _ in range(count)]
    tasks = []
    started = time.perf_counter()
    for n in range(count):
        tasks.append(asyncio.create_task(_idle_client(server, address, events[n], seen)))
        if n % 50 == 49:  # ramp 50 at a time: under the listen backlog and login timeouts
            batch = events[n - 49 : n + 1]
            await asyncio.wait([asyncio.ensure_future(e.wait()) for e in batch], timeout=60)
    ramp = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in events)))
    deadline = time.monotonic() + 300
    while not ramp.done():  # a client that fails (refused, closed) ends the wait with its error
        await asyncio.wait([ramp, *tasks], timeout=1, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and task.exception():
                ramp.cancel()
                raise task.exception()  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: IDLE clients not all ready after 300 s")
    setup_s = time.perf_counter() - started
    await asyncio.sleep(8)  # past Dovecot's imap_hibernate_timeout (5 s)
    pids = server.pids()
    rss_idle = rss_kib(pids)
    delivered = time.perf_counter()
    await asyncio.to_thread(server.deliver, address, b"Subject: wake up\r\n\r\nnew mail\r\n")
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return {
        "setup_s": setup_s,
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
        "processes": len(pids),
        "per_conn_kib": (rss_idle - rss_before) / count,
        "last_ms": (max(seen) - delivered) * 1000,
        "notified": len(seen),
    }


def imaptest_stress(server: Server, address: str, secs: int, clients: int) -> str:
    """imaptest's stress mode (random commands, APPENDs from a 300-message mbox) for `secs`
    seconds; returns its totals line(s). Both servers get the same mbox and settings."""
    binary = (
        subprocess.run(["bash", str(IMAPTEST_BUILD)], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    mbox = Path(tempfile.gettempdir()) / "mailplane-bench-imaptest.mbox"
    if not mbox.exists():
        subprocess.run(
            [sys.executable, str(IMAPTEST_MBOX), str(mbox)], check=True, capture_output=True
        )
    proc = subprocess.run(
        [
            binary,
            f"host={server.host}",
            f"port={server.port}",
            "ssl=any-cert",
            f"user={address}",
            f"pass={PASSWORD}",
            f"mbox={mbox}",
            f"secs={secs}",
            f"clients={clients}",
            "no_pipelining",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "LD_LIBRARY_PATH": "/usr/lib/dovecot"},
        timeout=secs + 120,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = sum(1 for line in lines if "Error" in line or "BAD" in line)
    # After "Totals:" imaptest prints the command names and the count of each in the run;
    # the line before it, the mean milliseconds per command.
    keep = [i for i, line in enumerate(lines) if line.startswith("Totals")]
    if not keep:
        tail = [f"no totals (exit {proc.returncode}):", *lines[-15:]]
    else:
        i = keep[-1]
        tail = [line for line in lines[i + 1 :] if line.strip()]
        tail += [line for line in lines[:i] if "ms/cmd avg" in line][-1:]
    return "\n".join("    " + line for line in tail) + (
        f"\n    ({errors} error lines in imaptest's output, exit {proc.returncode})"
    )


def _copy_maildir(source: Path, dovecot: Dovecot, user: str) -> int:
    """Our delivered files (new/ and cur/) into Dovecot's new/: the same bytes."""
    target = dovecot.maildir(user)
    n = 0
    for sub in ("new", "cur"):
        for f in sorted((source / sub).iterdir()):
            dest = target / "new" / f.name.split(":", 1)[0]
            shutil.copyfile(f, dest)
            os.chown(dest, dovecot.uid, dovecot.gid)
            n += 1
    return n


def run_all(server: Server, address: str, args: argparse.Namespace) -> dict[str, object]:
    print(f"{server.name} on {server.host}:{server.port}", flush=True)
    res: dict[str, object] = {}
    rate, cpu_ms = bench_logins(server, address, args.logins, args.threads)
    res["logins"], res["login_cpu_ms"] = rate, cpu_ms
    print(
        f"  logins/s (TLS connect + LOGIN + LOGOUT, {args.threads} threads, cached "
        f"verification): {rate:.0f}; server CPU {cpu_ms:.1f} ms per login",
        flush=True,
    )
    timings = bench_fetch_search(server, address)
    res.update(timings)
    for label, value in timings.items():
        unit = "" if label in ("fetched", "needle hits") else " ms"
        print(f"  {label}: {value:.0f}{unit}", flush=True)
    # IDLE clients watch a second, small mailbox (a typical INBOX-sized one would
    # measure the scan, not the connections).
    if args.idle:
        idle = asyncio.run(bench_idle(server, "idle@bench.test", args.idle))
        res.update(idle)
        print(
            f"  IDLE: {args.idle} connections set up in {idle['setup_s']:.1f} s; RSS of "
            f"{idle['processes']} processes {idle['rss_before_kib'] / 1024:.0f} MiB before, "
            f"{idle['rss_idle_kib'] / 1024:.0f} MiB with all idling "
            f"({idle['per_conn_kib']:.0f} KiB per connection)",
            flush=True,
        )
        print(
            f"  IDLE: one delivery announced to {idle['notified']}/{args.idle} clients, the "
            f"last after {idle['last_ms']:.0f} ms",
            flush=True,
        )
    if args.imaptest:
        print("  imaptest stress:\n" + imaptest_stress(server, address, args.imaptest, 10))
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--dovecot", action="store_true", help="same client against Dovecot")
    parser.add_argument("--imaptest", type=int, default=0, metavar="SECS", help="stress run")
    parser.add_argument("--quick", action="store_true", help="100 IDLE, 100 logins")
    args = parser.parse_args()
    if args.quick:
        args.idle, args.logins = 100, 100
    if args.dovecot:
        require_root("--dovecot")
        require_programs("dovecot")
    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-imap-"))
    address, org_id = setup(data_dir, args.messages)
    from mailplane.storage import maildir_deliver
    from mailplane.storage.maildir import mailbox_storage_path
    from mailplane.tls import tls_paths

    cert, key = tls_paths(data_dir=data_dir)
    dovecot = None
    if args.dovecot:
        dovecot = Dovecot(
            users={address: PASSWORD, "idle@bench.test": PASSWORD}, cert=cert, key=key
        )
        copied = _copy_maildir(
            mailbox_storage_path(organization_id=org_id, address=address), dovecot, address
        )
        dovecot.maildir("idle@bench.test")
    port, starttls_port = free_port(OURS), free_port(OURS)
    env = {
        **os.environ,
        "MAILPLANE_IMAP_PORT": str(port),
        "MAILPLANE_IMAP_STARTTLS_PORT": str(starttls_port),
        "MAILPLANE_IMAP_BIND": OURS,
        "MAILPLANE_LOG_LEVEL": os.environ.get("MAILPLANE_LOG_LEVEL", "WARNING"),
    }
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}; "
        f"openssl speed rsa2048: {rsa2048_sign_ms():.2f} ms/sig"
    )
    results: dict[str, dict[str, object]] = {}
    server = subprocess.Popen([sys.executable, "-m", "mailplane.imap"], env=env)
    try:
        wait_listening(OURS, port, what="mailplane imap")
        ours = Server(
            "mailplane",
            OURS,
            port,
            lambda: children_of([server.pid]),
            lambda a, raw: maildir_deliver(organization_id=org_id, address=a, raw=raw),
        )
        results["mailplane"] = run_all(ours, address, args)
    except BaseException:
        if dovecot:
            dovecot.remove()  # created (files copied) before ours ran
        raise
    finally:
        server.terminate()
        server.wait(10)
    if dovecot:
        try:
            dovecot.start()
            print(f"(Dovecot holds the same {copied} files)")
            peer = Server(
                "dovecot",
                dovecot.address,
                dovecot.port,
                dovecot.pids,
                lambda a, raw: dovecot.deliver(a, raw),
            )
            results["dovecot"] = run_all(peer, address, args)
        finally:
            dovecot.remove()
        _ratios(results["mailplane"], results["dovecot"])
    return 0


def _ratios(ours: dict[str, object], theirs: dict[str, object]) -> None:
    """Ours / Dovecot's, for each figure both have (>1 is worse for times and memory)."""
    print(
        "RATIOS mailplane / dovecot (times, CPU and memory: lower is better; logins/s: "
        "higher is better)"
    )
    for key, value in ours.items():
        other = theirs.get(key)
        if not isinstance(value, (int, float)) or not isinstance(other, (int, float)):
            continue
        if key in ("fetched", "needle hits", "notified", "processes", "rss_before_kib"):
            continue
        if other:
            print(f"  {key}: {value:.1f} vs {other:.1f} = {value / other:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
