"""API latency benchmark against a real server (not a test): prints figures.

    .venv/bin/python bench/api.py                     # SQLite, file-system broker
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mailplane .venv/bin/python bench/api.py

What it measures, with --mailboxes (10,000) mailboxes already in one Enterprise account:
  * create accept latency: POST /api/mailboxes/ -> 202 (validation + job row + broker send);
  * list latency: GET /api/mailboxes/?limit=100&offset=N at several offsets.

How: a temporary MAILPLANE_DATA_DIR; on PostgreSQL a throw-away database named after the
one in DATABASE_URL (`<name>_bench_<pid>`, dropped at the end), so the configured database
is never touched. The account is seeded through the ORM with bulk_create and one
precomputed scrypt hash (hashing 10,000 passwords would take minutes), the domain is marked
verified in the database, then `mailplane serve --only web` (gunicorn) is started on a free
port and driven by a few client threads over keep-alive connections (http.client).
The broker is a file-system queue in the data directory unless --broker is given (no worker
runs: the benchmark measures accepting the request, not provisioning).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import bench_account, bench_django

REPO = Path(__file__).resolve().parent.parent
BENCH_SECRET = "bench-secret-key-for-encryption-at-rest-not-for-production"
PASSWORD = "Bench-Password-123!"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin(url: str, sql: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def _prepare_environment(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MAILPLANE_DATA_DIR"] = str(data_dir)
    env["MAILPLANE_SECRET_KEY"] = BENCH_SECRET
    env["MAILPLANE_LOG_LEVEL"] = "WARNING"
    env["CELERY_BROKER_URL"] = args.broker or "filesystem://"
    env.pop("MAILPLANE_DEBUG", None)
    if args.database_url:
        parts = urlsplit(args.database_url)
        bench_db = f"{parts.path.lstrip('/') or 'mailplane'}_bench_{os.getpid()}"
        _pg_admin(args.database_url, f'CREATE DATABASE "{bench_db}"')
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{bench_db}"))
        args.bench_db = bench_db
    else:
        env.pop("DATABASE_URL", None)
        args.bench_db = None
    return env


def _seed(env: dict[str, str], mailboxes: int) -> tuple[str, int, int]:
    """Migrate and create the account; returns (api key, domain id, relay server id)."""
    bench_django(env=env)
    from django.db import connections

    from mailplane.mailboxes.models import Mailbox
    from mailplane.mailboxes.passwords import password_hash
    from mailplane.tenancy.services import api_key_create

    org, relay, domain = bench_account(plan="enterprise")
    key = api_key_create(organization=org, name="bench").secret
    hashed = password_hash(PASSWORD)  # one hash for every row: scrypt is slow by design
    started = time.monotonic()
    batch: list[Mailbox] = []
    for i in range(mailboxes):
        local = f"seed{i:06d}"
        batch.append(
            Mailbox(
                organization=org,
                domain=domain,
                relay_server=relay,
                local_part=local,
                address=f"{local}@bench.test",
                password=PASSWORD,
                password_hash=hashed,
                first_name="Seed",
                last_name=str(i),
            )
        )
        if len(batch) == 1000:
            Mailbox.objects.bulk_create(batch)
            batch.clear()
    if batch:
        Mailbox.objects.bulk_create(batch)
    # Measure the steady state: planner statistics as autovacuum would have left them, not
    # the "empty table" guess right after a bulk load.
    with connections["default"].cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"seeded {mailboxes} mailboxes in {time.monotonic() - started:.1f}s", flush=True)
    connections.close_all()
    return key, domain.pk, relay.pk


def _start_server(env: dict[str, str], port: int, args: argparse.Namespace, log: Path) -> Any:
    argv = [
        sys.executable,
        "-m",
        "mailplane.cli",
        "serve",
        "--only",
        "web",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--web-workers",
        str(args.web_workers),
        "--no-migrate",
    ]
    handle = log.open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/userinfo/")
            conn.getresponse().read()
            conn.close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"server did not answer within 60s; see {log}")


class Client:
    """One keep-alive connection; returns (status, seconds) per request."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, float, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request(method, path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, time.perf_counter() - started, data
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _run(
    threads: int,
    jobs: list[Any],
    do: Callable[[Client, Any], tuple[int, float, bytes]],
    port: int,
    key: str,
    expect: int,
) -> list[float]:
    timings: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(reversed(jobs))

    def worker() -> None:
        client = Client(port, key)
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop()
            status, seconds, data = do(client, job)
            with lock:
                if status == expect:
                    timings.append(seconds)
                else:
                    errors.append(f"{status}: {data[:200]!r}")

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} unexpected responses, e.g. {errors[0]}")
    return timings


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def _line(label: str, values: list[float]) -> str:
    return (
        f"{label:<34} n={len(values):<5} p50={_pct(values, 0.50):7.1f} ms  "
        f"p99={_pct(values, 0.99):7.1f} ms  max={max(values) * 1000:7.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--creates", type=int, default=500)
    parser.add_argument("--lists", type=int, default=100, help="requests per offset")
    parser.add_argument("--offsets", default="0,2500,5000,9900")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--broker", default="", help="broker URL (default: file-system queue)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    args.database_url = os.environ.get("DATABASE_URL", "")

    data_dir = Path(tempfile.mkdtemp(prefix="mailplane-bench-"))
    env = _prepare_environment(args, data_dir)
    proc = None
    try:
        key, domain_id, relay_id = _seed(env, args.mailboxes)
        port = _free_port()
        proc = _start_server(env, port, args, data_dir / "server.log")
        engine = "postgresql" if args.bench_db else "sqlite"
        print(
            f"server: mailplane serve --only web ({args.web_workers} gunicorn workers x 4 "
            f"threads) on 127.0.0.1:{port}, {engine}, broker {env['CELERY_BROKER_URL']}; "
            f"client: {args.threads} threads, keep-alive; python {platform.python_version()}",
            flush=True,
        )

        def create(client: Client, i: int) -> tuple[int, float, bytes]:
            body = {
                "email": f"bench{i:06d}",
                "domain": domain_id,
                "relay_server": relay_id,
                "password": PASSWORD,
                "project": None,
                "reply_to": "support@bench.test",
            }
            return client.request("POST", "/api/mailboxes/", body)

        def listing(client: Client, offset: int) -> tuple[int, float, bytes]:
            return client.request("GET", f"/api/mailboxes/?limit=100&offset={offset}")

        # Warm-up (not counted): imports, connections, caches in every gunicorn worker.
        _run(args.threads, list(range(10**6, 10**6 + 40)), create, port, key, 202)
        _run(args.threads, [0] * 40, listing, port, key, 200)

        creates = _run(args.threads, list(range(args.creates)), create, port, key, 202)
        print(_line("POST /api/mailboxes/ -> 202", creates), flush=True)
        all_lists: list[float] = []
        for offset in (int(o) for o in args.offsets.split(",")):
            timings = _run(args.threads, [offset] * args.lists, listing, port, key, 200)
            all_lists += timings
            print(_line(f"GET ?limit=100&offset={offset}", timings), flush=True)
        print(_line("GET ?limit=100 (all offsets)", all_lists), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        from django.db import connections

        connections.close_all()
        if args.bench_db:
            _pg_admin(args.database_url, f'DROP DATABASE IF EXISTS "{args.bench_db}"')
        if args.keep:
            print(f"data directory kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
