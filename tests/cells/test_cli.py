"""`mailplane cell …` and `serve --cell` as an operator runs them (real subprocesses, each
on its own SQLite registry): good paths, and hostile input answered with one clear line
and exit status 2, never a traceback, never the database password."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)
PASSWORD = "hunter2-Secret"


def _mailplane(tmp_path, *args):
    env = {**os.environ, "MAILPLANE_DATA_DIR": str(tmp_path / "data")}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "MAILPLANE_REDIS_URL"):
        env.pop(name, None)  # its own registry, never the test database
    return subprocess.run(
        [sys.executable, "-m", "mailplane.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _relays(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM relays_relayserver").fetchone()[0]


def _refused(done, *fragments):
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr
    assert PASSWORD not in done.stderr + done.stdout


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One registry for the module (a migrate costs seconds); each test uses its own names."""
    path = tmp_path_factory.mktemp("registry")
    assert _mailplane(path, "migrate").returncode == 0
    return path


def test_create_list_assign_and_refusals(registry):
    tmp = registry
    url = f"sqlite:///{tmp / 'cells' / 'x.sqlite3'}"
    created = _mailplane(
        tmp, "cell", "create", "x", "--database-url", url,
        "--storage-root", str(tmp / "x-storage"), "--host", "acme.outboxment.test",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "migrations applied" in created.stdout and "ready" in created.stdout
    assert (tmp / "cells" / "x.sqlite3").exists() and (tmp / "x-storage").is_dir()

    again = _mailplane(tmp, "cell", "create", "x", "--database-url", url, "--storage-root", "/x")
    _refused(again, "already exists")

    key = _mailplane(tmp, "org", "create", "--name", "Acme", "--email", "o@acme.test")
    assert key.returncode == 0, key.stderr
    assigned = _mailplane(tmp, "cell", "assign", "acme", "x")
    assert assigned.returncode == 0, assigned.stderr
    assert "on cell x" in assigned.stdout
    listing = _mailplane(tmp, "cell", "list")
    rows = {line.split("\t")[0]: line.split("\t") for line in listing.stdout.splitlines()}
    assert rows["x"][1:3] == ["ready", "1"] and rows["x"][3] == "acme.outboxment.test"
    assert rows["shared"][2] == "0"

    # Operator commands for the account act in its cell: a relay server made for it now...
    relay = _mailplane(
        tmp, "relay", "create", "--name", "r2", "--provider", "missioninbox", "--org", "acme"
    )
    assert relay.returncode == 0, relay.stderr
    assert _relays(tmp / "cells" / "x.sqlite3") == 2  # the account's first one moved too
    assert _relays(tmp / "data" / "mailplane.sqlite3") == 0
    # With no other data it may go back; its relay servers go along.
    back = _mailplane(tmp, "cell", "assign", "acme", "shared")
    assert back.returncode == 0, back.stderr
    assert _relays(tmp / "cells" / "x.sqlite3") == 0
    assert _relays(tmp / "data" / "mailplane.sqlite3") == 2

    _refused(_mailplane(tmp, "cell", "assign", "acme", "nowhere"), "no cell 'nowhere'")
    _refused(_mailplane(tmp, "cell", "assign", "nobody", "x"), "no organization 'nobody'")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Shared", "lowercase"),
        ("shared", "reserved"),
        ("default", "reserved"),
        ("-x", "lowercase"),
        ("x_y", "lowercase"),
        ("x-", "lowercase"),
        ("a" * 41, "lowercase"),
        ("../etc", "lowercase"),
        ("", "lowercase"),
    ],
)
def test_bad_cell_names_are_refused(registry, name, why):
    done = _mailplane(
        registry, "cell", "create", "--database-url", "sqlite:////tmp/never.sqlite3",
        "--storage-root", "/tmp/never", "--", name,
    )  # fmt: skip
    _refused(done, "name:", why)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://u@h/db", "postgres:// or sqlite:///"),
        ("nonsense", "postgres:// or sqlite:///"),
        ("", "postgres:// or sqlite:///"),
        ("sqlite:///relative.sqlite3", "absolute file path"),
        ("postgres://u@127.0.0.1:5432", "names no database"),
    ],
)
def test_bad_database_urls_are_refused(registry, url, why):
    done = _mailplane(
        registry, "cell", "create", "x", "--database-url", url, "--storage-root", "/tmp/never"
    )
    _refused(done, "database_url", why)


def test_bad_storage_root_hosts_and_addresses_are_refused(registry):
    base = ["cell", "create", "x", "--database-url", "sqlite:////tmp/never.sqlite3"]
    _refused(_mailplane(registry, *base, "--storage-root", "relative/dir"), "storage_root")
    root = ["--storage-root", "/tmp/never"]
    _refused(_mailplane(registry, *base, *root, "--host", "bad host!"), "smtp_host")
    _refused(_mailplane(registry, *base, *root, "--host", "x" * 300 + ".test"), "not a host")
    _refused(_mailplane(registry, *base, *root, "--listen", "999.1.1.1"), "listen_addresses")


def test_unreachable_database_fails_the_cell_clearly_and_serve_refuses_it(registry):
    url = f"postgres://mailplane:{PASSWORD}@127.0.0.1:1/nope"
    done = _mailplane(
        registry, "cell", "create", "far", "--database-url", url,
        "--storage-root", str(registry / "far"),
    )  # fmt: skip
    _refused(done, "cannot create PostgreSQL database 'nope' on 127.0.0.1:1")
    listing = _mailplane(registry, "cell", "list").stdout
    assert "far\tfailed" in listing and "failed at database" in listing
    assert "mailplane:***@127.0.0.1:1/nope" in listing and PASSWORD not in listing
    _refused(_mailplane(registry, "cell", "provision", "far"), "cannot create")

    _refused(_mailplane(registry, "serve", "--cell", "far"), "not ready")
    _refused(_mailplane(registry, "serve", "--cell", "nowhere"), "no cell 'nowhere'")
    _refused(_mailplane(registry, "serve", "--cell", "shared"), "without --cell")
    _refused(_mailplane(registry, "serve", "--cell", "far", "--only", "web"), "data-plane")
    far = _mailplane(registry, "org", "create", "--name", "Far Co", "--email", "o@far.test")
    assert far.returncode == 0, far.stderr
    _refused(_mailplane(registry, "cell", "assign", "far-co", "far"), "is failed, not ready")
