"""`mailplane serve` as a user runs it: real processes, on free ports, in a temporary data
directory, on the embedded defaults (SQLite, file-system broker) — for acceptance tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.dns_server import DnsServer

PORT_SETTINGS = ("HTTP", "SMTP", "SUBMISSION", "MX", "IMAP", "IMAP_STARTTLS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveService:
    def __init__(self, data_dir: Path, dns: DnsServer) -> None:
        self.ports = {name: free_port() for name in PORT_SETTINGS}
        self.base = f"http://127.0.0.1:{self.ports['HTTP']}"
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "MAILPLANE_DATA_DIR": str(data_dir),
            "MAILPLANE_DNS_RESOLVER": dns.address,
            "MAILPLANE_DNS_TIMEOUT": "2",
            **{f"MAILPLANE_{name}_PORT": str(port) for name, port in self.ports.items()},
        }
        # As a user runs it: embedded defaults, not the test run's database or broker.
        for name in (
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "MAILPLANE_REDIS_URL",
            "MAILPLANE_SECRET_KEY",
            "PYTEST_VERSION",
        ):
            self.env.pop(name, None)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "mailplane.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    def request(self, method: str, path: str, key: str, body: object = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()}") from None

    def verified_domain(self, key: str, dns: DnsServer, name: str, relay_id: int) -> Any:
        """Create a domain, publish exactly the records the API asks for, verify it."""
        domain = self.request(
            "POST", "/api/domains/", key, {"name": name, "relay_server": relay_id}
        )
        for record in domain["records"]:
            if record["type"] == "MX":
                dns.mx(record["name"], record["value"], preference=record["priority"])
            elif record["type"] == "CNAME":
                dns.cname(record["name"], record["value"])
            else:
                dns.txt(record["name"], record["value"])
        verified = self.request("POST", f"/api/domains/{domain['id']}/verify/", key)
        assert verified["verification_state"] == "verified", verified
        return verified


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"port {port} never opened:\n{log.read_text()}") from None
            time.sleep(0.1)


@contextmanager
def live_service(
    tmp_path: Path,
    services: str,
    env: dict[str, str] | None = None,
    serve_args: Sequence[str] = (),
) -> Iterator[tuple[LiveService, DnsServer]]:
    """Run `mailplane serve --only <services> <serve_args>` (with `env` added to its
    environment); yields once every listener answers."""
    with DnsServer() as dns:
        svc = LiveService(tmp_path / "data", dns)
        svc.env.update(env or {})
        svc.cli("migrate")
        log_path = tmp_path / "serve.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mailplane.cli",
                    "serve",
                    "--only",
                    services,
                    "--port",
                    str(svc.ports["HTTP"]),
                    "--no-migrate",
                    *serve_args,
                ],
                env=svc.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wanted = {
                    "web": ["HTTP"],
                    "submission": ["SMTP", "SUBMISSION"],
                    "mx": ["MX"],
                    "imap": ["IMAP", "IMAP_STARTTLS"],
                }
                for service in services.split(","):
                    for name in wanted.get(service, []):
                        wait_for_port(svc.ports[name], proc, log_path, timeout=60)
                yield svc, dns
            finally:
                proc.terminate()
                proc.wait(timeout=40)
