"""The `mailplane` command, run as a real subprocess against its own data directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.tools import skip_for_mode


def _mailplane(tmp_path, *args):
    env = {**os.environ, "MAILPLANE_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)  # its own SQLite database, never the test database
    return subprocess.run(
        [sys.executable, "-m", "mailplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(180)
def test_org_create_prints_a_working_key_last(tmp_path):
    assert _mailplane(tmp_path, "migrate").returncode == 0
    created = _mailplane(
        tmp_path, "org", "create", "--name", "Acme", "--email", "ops@acme.test", "--plan", "pro"
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("mp_")
    listing = _mailplane(tmp_path, "key", "list", "--org", "acme")
    assert key[:9] in listing.stdout and "active" in listing.stdout

    duplicate = _mailplane(tmp_path, "org", "create", "--name", "Acme", "--email", "x@y.test")
    assert duplicate.returncode == 2
    assert "already exists" in duplicate.stderr
    assert "Traceback" not in duplicate.stderr

    bad_relay = _mailplane(
        tmp_path,
        "relay",
        "create",
        "--name",
        "mg",
        "--provider",
        "mailgun",
        "--org",
        "acme",
        "--config",
        "{}",
    )
    assert bad_relay.returncode == 2
    assert "configuration.domain" in bad_relay.stderr
    good_relay = _mailplane(
        tmp_path,
        "relay",
        "create",
        "--name",
        "mg",
        "--provider",
        "mailgun",
        "--org",
        "acme",
        "--config",
        '{"domain": "mg.acme.test"}',
        "--credentials",
        '{"api_key": "key-abc"}',
    )
    assert good_relay.returncode == 0, good_relay.stderr


def test_several_delivery_processes_need_postgresql(tmp_path):
    refused = _mailplane(tmp_path, "serve", "--only", "delivery", "--delivery-processes", "2")
    assert refused.returncode == 2
    assert "--delivery-processes must be 1 on SQLite" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.timeout(120)
def test_serve_runs_the_asked_number_of_delivery_processes_on_postgresql(transactional_db):
    from django.db import connection

    if connection.vendor != "postgresql":
        skip_for_mode("several delivery workers need PostgreSQL (SKIP LOCKED claims)")
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("PYTEST_VERSION", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailplane.cli",
            "serve",
            "--only",
            "delivery",
            "--no-migrate",
            "--delivery-processes",
            "3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    started = []
    for line in proc.stdout:
        if line.startswith("mailplane: started delivery"):
            started.append(line)
            if len(started) == 3:
                break
    proc.terminate()
    assert proc.wait(60) == 0
    assert len({line.split("pid ")[1] for line in started}) == 3
