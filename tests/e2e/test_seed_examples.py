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
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dns_server import DnsServer
from tests.support.live_service import LiveService, live_service
from tests.support.tools import requires_tool

HERE = Path(__file__).parent
pytestmark = [
    pytest.mark.timeout(240),
    requires_tool("node"),
]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[LiveService, DnsServer]]:
    with live_service(tmp_path, "web,worker") as running:
        yield running


def test_seed_fetch_examples_run_unchanged(
    service: tuple[LiveService, DnsServer], tmp_path: Path
) -> None:
    svc, dns = service
    key = (
        svc.cli("org", "create", "--name", "Seed Co", "--email", "ops@seed.test", "--plan", "pro")
        .strip()
        .splitlines()[-1]
    )
    relay = svc.request("GET", "/api/relay-servers/", key)["results"][0]
    project = svc.request("POST", "/api/projects/", key, {"name": "Seeds"})
    domain = svc.verified_domain(key, dns, "yourdomain.com", relay["id"])

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

    assert [s["provider"] for s in steps["servers"]["results"]] == ["missioninbox"]
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
