"""`mailplane serve`: migrate, then run every service as a supervised child process.

Embedded mode runs them all from one command; production runs `--only NAME` per process
on as many hosts as needed. Data-plane services (SMTP, IMAP, delivery) register here too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailplane import config
from mailplane.core.process import exit_now

log = logging.getLogger("mailplane.serve")

Command = Callable[[argparse.Namespace], list[str]]


@dataclass(slots=True)
class Service:
    name: str
    command: Command
    default: bool = True  # started by a plain `mailplane serve`
    copies: Callable[[argparse.Namespace], int] = lambda args: 1  # processes to run


def _log_level() -> str:
    """Children log warnings and errors unless MAILPLANE_LOG_LEVEL asks for more: a start
    is then one line per service, not Celery's and gunicorn's banners."""
    return os.environ.get("MAILPLANE_LOG_LEVEL", "WARNING").upper()


# sun_path of a Unix socket holds 108 bytes on Linux, 104 on the BSDs.
_UNIX_SOCKET_PATH_MAX = 100


def _web(args: argparse.Namespace) -> list[str]:
    from django.conf import settings

    # gunicorn's control socket defaults to one path per user (~/.gunicorn/gunicorn.ctl),
    # and each instance removes the last one's: keep it with this instance's state, one
    # per port. A data directory too deep for a socket path goes without one.
    control = str(Path(settings.DATA_DIR) / f"gunicorn-{args.port}.ctl")
    if len(control.encode()) > _UNIX_SOCKET_PATH_MAX:
        control_options = ["--no-control-socket"]
    else:
        control_options = ["--control-socket", control, "--control-socket-mode", "0o600"]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "mailplane.wsgi:application",
        # Hooks that retire a worker whose request runs past MAILPLANE_HTTP_REQUEST_TIMEOUT.
        "--config",
        "python:mailplane.cli.gunicorn_conf",
        "--bind",
        f"{args.host}:{args.port}",
        "--workers",
        str(args.web_workers),
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--access-logfile",
        "-",
        "--log-level",
        _log_level().lower(),
        # A worker whose main loop is silent this long is killed (the heartbeat).
        "--timeout",
        "30",
        "--graceful-timeout",
        "20",
        *control_options,
    ]


def _worker(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "mailplane",
        "--quiet",  # no banner
        "worker",
        "--loglevel",
        _log_level(),
        "--concurrency",
        str(args.worker_concurrency),
        "--pool",
        "threads",
    ]


def _beat(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "mailplane",
        "--quiet",
        "beat",
        "--loglevel",
        _log_level(),
    ]


def _imap(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "mailplane.imap"]


def _delivery(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "mailplane.delivery"]


def _webhooks(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "mailplane.webhooks"]


def _analytics(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "mailplane.analytics"]


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("web", _web),
        Service("worker", _worker),
        Service("beat", _beat),
        Service("imap", _imap),
        Service("delivery", _delivery, copies=lambda args: args.delivery_processes),
        # Signed event webhooks (webhooks/runner.py); any number of them on PostgreSQL.
        Service("webhooks", _webhooks),
        # Stats counted from the event stream (analytics/runner.py: why not a beat task).
        Service("analytics", _analytics),
    )
}


def register(service: Service) -> None:
    SERVICES[service.name] = service


def _smtp(kind: str) -> Command:
    def command(args: argparse.Namespace) -> list[str]:
        return [sys.executable, "-m", "mailplane.smtp", kind]

    return command


# SMTP listeners (submission 465/587, inbound MX 25): started by a plain `mailplane serve`.
register(Service("submission", _smtp("submission")))
register(Service("mx", _smtp("mx")))


def _rspamd_port() -> int:
    return config.env_int("MAILPLANE_RSPAMD_PORT", 11433)


def _rspamd(args: argparse.Namespace) -> list[str]:
    from django.conf import settings

    from mailplane.shield.rspamd_service import rspamd_command

    return rspamd_command(root=Path(settings.DATA_DIR) / "rspamd", port=_rspamd_port())


# MI Shield's scanner (shield/): with MAILPLANE_RSPAMD=1 (and Debian's rspamd installed).
register(Service("rspamd", _rspamd, default=config.env_bool("MAILPLANE_RSPAMD")))


def add_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run Mailplane (all services, or --only some)")
    serve.add_argument(
        "--only", default="", help="comma-separated services: " + ", ".join(SERVICES)
    )
    serve.add_argument("--host", default=os.environ.get("MAILPLANE_HTTP_HOST", "127.0.0.1"))
    serve.add_argument(
        "--port", type=int, default=int(os.environ.get("MAILPLANE_HTTP_PORT", "8000"))
    )
    serve.add_argument("--web-workers", type=int, default=2)
    serve.add_argument("--worker-concurrency", type=int, default=4)
    serve.add_argument(
        "--delivery-processes",
        type=int,
        default=int(os.environ.get("MAILPLANE_DELIVERY_PROCESSES", "1")),
        help="delivery workers on this host (more than one needs PostgreSQL)",
    )
    serve.add_argument("--no-migrate", action="store_true")
    serve.add_argument(
        "--cell",
        default="",
        help="run this cell's data-plane services (" + ", ".join(CELL_SERVICES) + ") on its "
        "database and storage root, read from the registry",
    )
    serve.set_defaults(func=run_serve)
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=run_migrate)


# Everything Mailplane writes (the SQLite database and its journal, the queue, keys, mail)
# is for its own user only; the children `serve` starts inherit the mask.
PRIVATE_UMASK = 0o077


def private_state(*, data_dir: Path, sqlite_path: Path | None) -> None:
    """Owner-only files from here on, and the state already there made so as well.

    The explicit modes cover what was created before the mask (an older install, or a
    database made by another command): the data directory 0700, its files 0600.
    """
    os.umask(PRIVATE_UMASK)
    private = [(data_dir, 0o700), (data_dir / "secret.key", 0o600)]
    if sqlite_path is not None:
        private += [(Path(f"{sqlite_path}{s}"), 0o600) for s in ("", "-wal", "-shm")]
    for path, mode in private:
        try:
            if path.exists():
                os.chmod(path, mode)
        except OSError as exc:  # e.g. a directory the operator owns and shares on purpose
            log.warning("could not make %s private: %s", path, exc)


def _private_state_from_settings() -> None:
    from django.conf import settings

    database = settings.DATABASES["default"]
    sqlite = database["ENGINE"].endswith("sqlite3")
    private_state(
        data_dir=Path(settings.DATA_DIR), sqlite_path=Path(database["NAME"]) if sqlite else None
    )


def run_migrate(args: argparse.Namespace | None = None) -> int:
    """Apply the migrations; one line says how many (none printed when up to date)."""
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    _private_state_from_settings()
    executor = MigrationExecutor(connection)
    pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    call_command("migrate", interactive=False, verbosity=0)
    _private_state_from_settings()  # a database the migration just created
    if pending:
        print(f"mailplane: database migrated ({pending} migrations applied)", flush=True)
    return 0


@dataclass(slots=True)
class _Child:
    service: Service
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        # Its own process group, so that a stop can end the whole service (gunicorn's
        # workers too) at once; Ctrl-C reaches the supervisor, which stops the children.
        self.process = subprocess.Popen(self.argv, start_new_session=True)
        print(f"mailplane: started {self.service.name} (pid {self.process.pid})", flush=True)


# What `serve --cell` runs: the data plane. The control plane (web, worker, beat) is one
# for every cell; it routes each account's data to its cell (cells/routing.py).
CELL_SERVICES = ("submission", "mx", "imap", "delivery", "webhooks", "analytics")


def _cell_environment(name: str) -> tuple[dict[str, str], str] | str:
    """The environment of cell `name`'s services (its DATABASE_URL, storage root, host
    names, bind address) and its engine; or why it cannot be served."""
    from mailplane.cells.databases import database_config
    from mailplane.cells.models import SHARED, CellState
    from mailplane.cells.selectors import cell_get
    from mailplane.core.errors import DomainError

    if name == SHARED:
        return "the shared cell is `mailplane serve` without --cell"
    try:
        cell = cell_get(name=name)
        engine = str(database_config(cell.database_url)["ENGINE"]).rsplit(".", 1)[-1]
    except DomainError as exc:
        return exc.message
    if cell.state != CellState.READY:
        return f"cell {name!r} is {cell.state}, not ready ({cell.progress or 'not provisioned'})"
    env = {
        "DATABASE_URL": cell.database_url,
        "MAILPLANE_STORAGE_ROOT": cell.storage_root,
        "MAILPLANE_CELL": cell.name,
    }
    if cell.smtp_host:
        env["MAILPLANE_SMTP_HOST"] = cell.smtp_host
    if cell.imap_host:
        env["MAILPLANE_IMAP_HOST"] = cell.imap_host
    if cell.listen_addresses:
        # One address per listener for now (the listeners take one bind host).
        env["MAILPLANE_SMTP_BIND"] = env["MAILPLANE_IMAP_BIND"] = str(cell.listen_addresses[0])
    return env, engine


def run_serve(args: argparse.Namespace) -> int:
    from django.conf import settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cell_name = getattr(args, "cell", "")
    defaults = (
        list(CELL_SERVICES) if cell_name else [s.name for s in SERVICES.values() if s.default]
    )
    names = [n.strip() for n in args.only.split(",") if n.strip()] or defaults
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        print(f"mailplane: unknown service(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    if cell_name:
        not_cell = [n for n in names if n not in CELL_SERVICES]
        if not_cell:
            print(
                f"mailplane: --cell runs data-plane services only ({', '.join(CELL_SERVICES)}); "
                f"{', '.join(not_cell)} serve every cell: run them without --cell",
                file=sys.stderr,
            )
            return 2
        found = _cell_environment(cell_name)
        if isinstance(found, str):
            print(f"mailplane: {found}", file=sys.stderr)
            return 2
        cell_env, engine = found
        if args.delivery_processes < 1 or (args.delivery_processes > 1 and engine == "sqlite3"):
            print(
                "mailplane: --delivery-processes must be 1 on SQLite (one writer) and at least 1 "
                "on PostgreSQL",
                file=sys.stderr,
            )
            return 2
        if not args.no_migrate:
            from mailplane.cells.selectors import cell_get
            from mailplane.cells.services import cell_provision
            from mailplane.core.errors import DomainError

            try:  # new migrations of this version (idempotent when up to date)
                cell_provision(cell=cell_get(name=cell_name))
            except DomainError as exc:
                print(f"mailplane: cell {cell_name}: {exc.message}", file=sys.stderr)
                return 2
        _private_state_from_settings()
        # The children see the cell's database as `default` (nothing in smtp/, imap/ or
        # delivery/ knows about cells); the supervisor itself keeps the registry.
        os.environ.update(cell_env)
        print(
            f"mailplane: cell {cell_name}: database {engine}, "
            f"storage root {cell_env['MAILPLANE_STORAGE_ROOT']}",
            flush=True,
        )
        return _supervise(args, names, engine=engine)
    if "rspamd" in names:
        if shutil.which("rspamd") is None:
            print(
                "mailplane: rspamd is not installed (apt-get install rspamd), or unset "
                "MAILPLANE_RSPAMD",
                file=sys.stderr,
            )
            return 2
        # The other services ask it (shield/services.py); an operator's own URL wins.
        url = f"http://127.0.0.1:{_rspamd_port()}"
        os.environ.setdefault("MAILPLANE_RSPAMD_URL", url)
        settings.MAILPLANE["RSPAMD_URL"] = os.environ["MAILPLANE_RSPAMD_URL"]
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    if args.delivery_processes < 1 or (args.delivery_processes > 1 and engine == "sqlite3"):
        print(
            "mailplane: --delivery-processes must be 1 on SQLite (one writer) and at least 1 "
            "on PostgreSQL",
            file=sys.stderr,
        )
        return 2
    if not args.no_migrate:
        run_migrate()
    else:
        _private_state_from_settings()
    return _supervise(args, names, engine=engine)


def _supervise(args: argparse.Namespace, names: list[str], *, engine: str) -> int:
    from django.conf import settings

    from mailplane.dns.resolver import resolver_describe

    conf = settings.MAILPLANE
    print(f"mailplane: data directory {settings.DATA_DIR}", flush=True)
    print(
        f"mailplane: database {engine}, "
        f"broker {settings.CELERY_BROKER_URL.split('://')[0]}, "
        f"DNS resolver {resolver_describe()}",
        flush=True,
    )
    if "web" in names:
        print(
            f"mailplane: API on http://{args.host}:{args.port}/api/ (docs at /api/docs/)",
            flush=True,
        )
    smtp_host = os.environ.get("MAILPLANE_SMTP_HOST", conf["SHARED_SMTP_HOST"])
    imap_host = os.environ.get("MAILPLANE_IMAP_HOST", conf["SHARED_IMAP_HOST"])
    bind = os.environ.get("MAILPLANE_SMTP_BIND", conf["SMTP_BIND"])
    print(
        f"mailplane: mail clients use SMTP {smtp_host}:{conf['SMTP_PORT']} "
        f"(implicit TLS) or :{conf['SUBMISSION_PORT']} (STARTTLS), "
        f"IMAP {imap_host}:{conf['IMAP_PORT']}; "
        f"inbound MX on {bind}:{conf['MX_PORT']}",
        flush=True,
    )
    children = [
        _Child(SERVICES[n], SERVICES[n].command(args))
        for n in names
        for _ in range(SERVICES[n].copies(args))
    ]
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start()
    while not stopping:
        time.sleep(0.1)
        for child in children:
            assert child.process is not None
            if child.process.poll() is None or stopping:
                continue
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < 60] + [now]
            if len(child.restarts) > 5:
                print(f"mailplane: {child.service.name} keeps crashing; stopping", file=sys.stderr)
                stopping = True
                break
            print(
                f"mailplane: {child.service.name} exited ({child.process.returncode}); restarting",
                file=sys.stderr,
            )
            child.start()
    stop_children(children, grace=config.env_float("MAILPLANE_STOP_GRACE_SECONDS", 1.5))
    # Every child is reaped and nothing is buffered but stdio: skip the interpreter's
    # teardown of Django, Celery and psycopg, which alone takes about a second on a busy
    # machine, so that the whole stop stays within 2 s.
    exit_now(0)


def stop_children(children: list[_Child], *, grace: float) -> None:
    """SIGTERM every service, then SIGKILL what is left after `grace` seconds.

    Killing loses nothing acknowledged: every acknowledgment follows a commit (an SMTP 250
    comes after the message's row and bytes are durable, an IMAP OK after the Maildir
    write, an API 2xx after its transaction), a delivery claim is a lease that runs out,
    and a job whose worker died is sent again (jobs.services.job_requeue_stale). What a
    kill cuts short was never acknowledged, so the client tries again.
    """
    running = [c for c in children if c.process is not None and c.process.poll() is None]
    for child in running:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        time.sleep(0.02)
        running = [c for c in running if c.process is not None and c.process.poll() is None]
    for child in running:
        print(
            f"mailplane: {child.service.name} still running {grace:g} s after SIGTERM: "
            "killed (nothing it acknowledged is lost)",
            file=sys.stderr,
            flush=True,
        )
        _signal_group(child, signal.SIGKILL)
    for child in children:
        if child.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL is not refused
                child.process.wait(timeout=5)
        # Leftovers of a service's group (gunicorn workers of a killed master).
        if child.process is not None and child in running:
            _signal_group(child, signal.SIGKILL)


def _signal_group(child: _Child, signum: int) -> None:
    assert child.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, signum)
