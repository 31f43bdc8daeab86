"""Acceptance: the seeds' own `fetch` examples, run by Node against `mailplane serve`.

Everything is real: the service runs as the README starts it (web + Celery worker on the
embedded SQLite/file-system defaults), the account comes from the CLI, the domain is
verified against a local DNS server, and the snippets are the seeds' code with only the
host, the key and the example ids replaced.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dns_server import DnsServer

HERE = Path(__file__).parent
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, data_dir: Path, dns: DnsServer) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MAILPLANE_DATA_DIR": str(data_dir),
            "MAILPLANE_DNS_RESOLVER": dns.address,
            "MAILPLANE_DNS_TIMEOUT": "2",
        }
        # As a user runs it: embedded defaults, not the test run's in-process broker.
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "MAILPLANE_SECRET_KEY", "PYTEST_VERSION"):
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

    def request(self, method: str, path: str, key: str, body: object = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"null")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, DnsServer]]:
    with DnsServer() as dns:
        svc = Service(tmp_path / "data", dns)
        svc.cli("migrate")
        log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailplane.cli",
                "serve",
                "--only",
                "web,worker",
                "--port",
                str(svc.port),
                "--no-migrate",
            ],
            env=svc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", svc.port), timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError((tmp_path / "serve.log").read_text()) from None
                    time.sleep(0.1)
            yield svc, dns
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def test_seed_fetch_examples_run_unchanged(service: tuple[Service, DnsServer], tmp_path: Path):
    svc, dns = service
    key = (
        svc.cli("org", "create", "--name", "Seed Co", "--email", "ops@seed.test", "--plan", "pro")
        .strip()
        .splitlines()[-1]
    )
    relay = svc.request("GET", "/api/relay-servers/", key)[0]  # type: ignore[index]
    project = svc.request("POST", "/api/projects/", key, {"name": "Seeds"})
    domain = svc.request(
        "POST", "/api/domains/", key, {"name": "yourdomain.com", "relay_server": relay["id"]}
    )
    # Publish exactly the records the API asked for, then verify with real DNS queries.
    for record in domain["records"]:  # type: ignore[index]
        if record["type"] == "MX":
            dns.mx(record["name"], record["value"], preference=record["priority"])
        elif record["type"] == "CNAME":
            dns.cname(record["name"], record["value"])
        else:
            dns.txt(record["name"], record["value"])
    verified = svc.request("POST", f"/api/domains/{domain['id']}/verify/", key)  # type: ignore[index]
    assert verified["verification_state"] == "verified", verified  # type: ignore[index]

    script = (HERE / "seed_examples.mjs").read_text()
    script = (
        script.replace("https://api-v2.missioninbox.com", svc.base)
        .replace("YOUR_API_KEY", key)
        .replace('"domain": 123', f'"domain": {domain["id"]}')  # type: ignore[index]
        .replace('"relay_server": 456', f'"relay_server": {relay["id"]}')
        .replace('"project": 789', f'"project": {project["id"]}')
    )  # type: ignore[index]
    (tmp_path / "seed.mjs").write_text(script)
    run = subprocess.run(
        ["node", str(tmp_path / "seed.mjs")], capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
    steps = {}
    for line in run.stdout.splitlines():
        if line.startswith('{"step"'):
            item = json.loads(line)
            steps[item["step"]] = item["value"]

    assert [s["provider"] for s in steps["servers"]] == ["missioninbox"]
    assert steps["created"] is True
    assert steps["mailboxes"]["results"][0]["email"] == "john.doe@yourdomain.com"
    assert steps["mailboxes"]["results"][0]["reply_to"] == "support@yourdomain.com"
    assert steps["userinfo"]["ibx_smtp"] and steps["userinfo"]["ibx_imap"]
    smartlead = steps["smartlead"]
    assert smartlead["status"] == 200
    assert smartlead["type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(smartlead["text"])))
    assert rows[0]["from_email"] == "john.doe@yourdomain.com"
    assert rows[0]["password"] == "SecurePassword123!"
    assert rows[0]["smtp_host"] == steps["userinfo"]["ibx_smtp"]
