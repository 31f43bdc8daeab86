"""Acceptance for a dedicated cell: the control plane (`mailplane serve --only web,worker`)
and the cell's data plane (`mailplane serve --cell x`) as separate real processes. An
account put on cell `x` makes a domain and a mailbox through the API; mail sent to the
cell's MX lands in the cell's storage root and is read over the cell's IMAP; the rows are
in the cell's database (a second PostgreSQL database in the PostgreSQL pass, a second
SQLite file in the SQLite pass), none in the registry's."""

from __future__ import annotations

import imaplib
import smtplib
import sqlite3
import subprocess
import sys
import time
from email import message_from_bytes

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from mailplane.tls import client_context_insecure
from tests.cells.conftest import PG_NAME, cell_database_url, pg_drop
from tests.support.fixtures import wait_for
from tests.support.live_service import free_port, live_service, wait_for_port

pytestmark = pytest.mark.timeout(300)
PASSWORD = "Lunch-Secret-pass-1"
CELL_PORTS = ("SMTP", "SUBMISSION", "MX", "IMAP", "IMAP_STARTTLS")


def _postgres() -> bool:
    return not connections.databases[DEFAULT_DB_ALIAS]["ENGINE"].endswith("sqlite3")


@pytest.fixture
def cell_database(tmp_path):
    if _postgres():
        pg_drop(PG_NAME)
    yield cell_database_url(tmp_path)
    if _postgres():
        pg_drop(PG_NAME)


def _count(url: str, table: str) -> int:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_a_cell_account_receives_mail_on_its_cell_and_reads_it_over_its_imap(
    tmp_path, cell_database
):
    with live_service(tmp_path, "web,worker") as (svc, dns):
        cell_storage = tmp_path / "cell-x"
        created = svc.cli(
            "cell", "create", "x", "--database-url", cell_database,
            "--storage-root", str(cell_storage), "--host", "acme.outboxment.test",
        )  # fmt: skip
        assert "ready" in created
        key = svc.cli("org", "create", "--name", "Acme", "--email", "o@acme.test").split()[-1]
        svc.cli("cell", "assign", "acme", "x")

        ports = {name: free_port() for name in CELL_PORTS}
        env = {**svc.env, **{f"MAILPLANE_{n}_PORT": str(p) for n, p in ports.items()}}
        log_path = tmp_path / "cell.log"
        with open(log_path, "wb") as log:
            cell = subprocess.Popen(
                [sys.executable, "-m", "mailplane.cli", "serve", "--cell", "x",
                 "--only", "mx,imap"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                for name in ("MX", "IMAP"):
                    wait_for_port(ports[name], cell, log_path, timeout=60)
                _exercise(svc, dns, key, ports, cell_database, cell_storage, tmp_path)
            finally:
                cell.terminate()
                cell.wait(timeout=30)
        assert "cell x: database" in log_path.read_text()


def _exercise(svc, dns, key, ports, cell_database, cell_storage, tmp_path):
    relay = svc.request("GET", "/api/relay-servers/", key)["results"][0]
    domain = svc.verified_domain(key, dns, "acme.test", relay["id"])
    task = svc.request(
        "POST",
        "/api/mailboxes/",
        key,
        {"email": "bob", "domain": domain["id"], "relay_server": relay["id"], "password": PASSWORD},
    )

    def finished():
        status = svc.request("GET", f"/api/tasks/{task['task_id']}/", key)
        return status if status["status"] != "pending" else None

    # The worker starts beside the web process; on a loaded machine it may take a while.
    status = wait_for(finished, timeout=90, what="mailbox task")
    assert status["status"] == "success", status
    info = svc.request("GET", "/api/userinfo/", key)
    assert info["ibx_smtp"] == info["ibx_imap"] == "acme.outboxment.test"

    # The rows are in the cell's database, none in the registry's.
    registry = f"sqlite:///{svc.data_dir / 'mailplane.sqlite3'}"
    assert _count(cell_database, "mailboxes_mailbox") == 1
    assert _count(cell_database, "domains_domain") == 1
    assert _count(registry, "mailboxes_mailbox") == 0
    assert _count(registry, "domains_domain") == 0
    assert _count(registry, "jobs_job") == 1  # jobs stay in the registry (global task ids)

    with smtplib.SMTP("127.0.0.1", ports["MX"], timeout=20) as mx:
        refused = mx.sendmail(
            "news@sender.test",
            ["bob@acme.test"],
            b"From: news@sender.test\r\nTo: bob@acme.test\r\nSubject: On the cell\r\n\r\nHi\r\n",
        )
        assert refused == {}
    # Its Maildir is under the cell's storage root, not the shared one.
    assert wait_for(lambda: list(cell_storage.rglob("new/*")), timeout=20, what="maildir file")
    assert not list((svc.data_dir / "storage").rglob("new/*"))

    client = imaplib.IMAP4_SSL(
        "127.0.0.1", ports["IMAP"], ssl_context=client_context_insecure(), timeout=20
    )
    client.login("bob@acme.test", PASSWORD)
    client.select("INBOX")
    deadline = time.monotonic() + 20
    while not (found := client.search(None, "ALL")[1][0].split()):
        assert time.monotonic() < deadline, "message never showed over IMAP"
        time.sleep(0.1)
        client.noop()
    _, parts = client.fetch(found[0], "(RFC822)")
    assert message_from_bytes(parts[0][1])["Subject"] == "On the cell"
    client.logout()
