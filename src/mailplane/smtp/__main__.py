"""`python -m mailplane.smtp submission|mx`: one long-running listener service.

The service is MAILPLANE_SMTP_PROCESSES processes (default 1; 0 = one per CPU) listening
on the same ports with SO_REUSEPORT, the kernel spreading connections over them, as Postfix
runs many smtpd processes: one Python process is one core at most (the GIL), and an SMTP
session is mostly CPU (parsing, TLS, checks). The default stays 1: on a 2-core machine
shared with the client, 2 processes measured slower than 1 (smaller batches, so more
syncs per message; issue 15), so more pays only where there are cores to spare. Each
process has its own group-commit writer (smtp/ingest.py), so "250 only once durable" holds
per process exactly as with one.

The first process starts the others and is their supervisor: SIGTERM to it stops them
all (each finishes its batch in flight), and if one of them dies the whole service stops
with status 1, so that `mailplane serve` (or systemd) restarts it whole. The others also
get SIGTERM when the first dies (PR_SET_PDEATHSIG), so no listener outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from mailplane.core.process import exit_now

log = logging.getLogger("mailplane.smtp")
_WORKER_ENV = "MAILPLANE_SMTP_WORKER"  # set in the processes the first one starts: "2", "3"...
_READY_ENV = "MAILPLANE_SMTP_READY_FD"  # where they say they listen (see _start_others)
_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("submission", "mx"):
        print("usage: python -m mailplane.smtp submission|mx", file=sys.stderr)
        return 2
    if os.environ.get(_WORKER_ENV):
        _die_with_parent()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailplane.settings")
    import django

    django.setup()
    _keep_sqlite_connections()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosmtpd logs every command line at INFO; our handlers log each decision instead.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    from django.conf import settings

    processes = listener_processes(settings.MAILPLANE.get("SMTP_PROCESSES", 1))
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        code = runner.run(serve(args[0], processes=processes))
    exit_now(code)


def listener_processes(setting: int) -> int:
    """MAILPLANE_SMTP_PROCESSES: 0 means one per CPU this process may use."""
    if setting > 0:
        return setting
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop (less CPU per read, write, TLS record and wake-up than asyncio's
    own); MAILPLANE_SMTP_EVENT_LOOP=asyncio chooses asyncio's."""
    if os.environ.get("MAILPLANE_SMTP_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not built for this platform (Windows)
        return None
    return uvloop.new_event_loop


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


def _keep_sqlite_connections() -> None:
    """Let this process's worker threads keep their SQLite connections open.

    settings.py closes SQLite connections after every request (CONN_MAX_AGE 0); here every
    RCPT would then open one (PRAGMAs and SQL function registration, about as costly as
    the lookup itself). This process has a fixed pool of threads (smtp/db.py and the
    writer), so at most that many connections stay open; WAL readers in autocommit see
    each commit at once, so nothing read is staler than with a new connection.
    """
    from django.db import connections

    db = connections.settings["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3" and not db.get("CONN_MAX_AGE"):
        db["CONN_MAX_AGE"] = 600


def _start_others(kind: str, processes: int) -> list[subprocess.Popen[bytes]]:
    """Start processes 2..N and wait until each listens (it writes to a pipe then), so that
    the first one, which listens last, announces a service that is whole."""
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    for number in range(2, processes + 1):
        read_end, write_end = os.pipe()
        child = subprocess.Popen(
            [sys.executable, "-m", "mailplane.smtp", kind],
            env={**os.environ, _WORKER_ENV: str(number), _READY_ENV: str(write_end)},
            pass_fds=(write_end,),
        )
        os.close(write_end)
        started.append((child, read_end))
    children = []
    for child, read_end in started:
        with os.fdopen(read_end, "rb") as ready:
            if ready.read(1) != b"1":  # EOF: it exited before listening
                for other, _ in started:
                    other.terminate()
                raise SystemExit(f"mailplane: listener process {child.pid} did not start")
        children.append(child)
    return children


def _ready() -> None:
    """In processes 2..N: tell the first one this process listens."""
    fd = os.environ.pop(_READY_ENV, "")
    if fd:
        os.write(int(fd), b"1")
        os.close(int(fd))


async def _watch(children: list[subprocess.Popen[bytes]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for child in children:
            if child.poll() is not None:
                log.error("listener process %d exited (%s); stopping", child.pid, child.returncode)
                stop.set()
                return
        await asyncio.sleep(0.5)


async def serve(kind: str, *, processes: int = 1) -> int:
    from django.conf import settings

    from mailplane import tls
    from mailplane.smtp import server
    from mailplane.smtp.mx import MXHandler
    from mailplane.smtp.submission import SubmissionHandler

    conf = settings.MAILPLANE
    host = conf["SMTP_BIND"]
    context = tls.server_context()
    limits = server.limits_from_settings()
    reuse_port = processes > 1
    number = os.environ.get(_WORKER_ENV, "1")
    which = f" (process {number} of {processes})" if reuse_port else ""
    children = _start_others(kind, processes) if reuse_port and number == "1" else []
    handler: SubmissionHandler | MXHandler
    if kind == "submission":
        handler = SubmissionHandler(
            hostname=conf["SHARED_SMTP_HOST"], max_recipients=limits.max_recipients
        )
        servers = await server.submission_start(
            host=host,
            implicit_port=conf["SMTP_PORT"],
            starttls_port=conf["SUBMISSION_PORT"],
            tls_context=context,
            handler=handler,
            limits=limits,
            reuse_port=reuse_port,
        )
        print(
            f"mailplane: submission on {host}:{server.bound_port(servers[0])} (implicit TLS), "
            f"{host}:{server.bound_port(servers[1])} (STARTTLS){which}",
            flush=True,
        )
    else:
        handler = MXHandler(hostname=server.mx_hostname(), max_recipients=limits.max_recipients)
        servers = [
            await server.mx_start(
                host=host,
                port=conf["MX_PORT"],
                tls_context=context,
                handler=handler,
                limits=limits,
                reuse_port=reuse_port,
            )
        ]
        print(f"mailplane: inbound MX on {host}:{server.bound_port(servers[0])}{which}", flush=True)
    _ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch(children, stop)) if children else None
    await stop.wait()
    failed = watcher is not None and watcher.done()
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for s in servers:
        s.close()
    for s in servers:
        await s.wait_closed()
    await handler.aclose()  # finish the batch in flight, close the writer's connection
    if watcher is not None:
        watcher.cancel()
    for child in children:  # each finishes its own batch in flight
        await loop.run_in_executor(None, _reap, child)
    return 1 if failed else 0


def _reap(child: subprocess.Popen[bytes]) -> None:
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


if __name__ == "__main__":
    sys.exit(main())
