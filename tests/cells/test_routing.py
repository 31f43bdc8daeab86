"""An account on a second cell: its data is written to the cell's database and nowhere
else, another account on `shared` neither sees it nor is touched by it, and its API key
keeps working (authentication never leaves the registry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import DEFAULT_DB_ALIAS

from mailplane.cells.databases import cell_alias
from mailplane.cells.models import Cell, CellState
from mailplane.cells.routing import data_alias, data_alias_using
from mailplane.cells.services import cell_assign, cell_create, cell_provision
from mailplane.core.errors import NotAllowed
from mailplane.domains.models import Domain
from mailplane.mailboxes.models import Mailbox
from mailplane.relays.models import RelayServer
from mailplane.servers.models import EmailServer
from mailplane.tenancy.models import Organization
from tests.cells.conftest import CELL, CELL_DATABASES
from tests.support.fixtures import verified_domain, wait_for_task
from tests.support.servers import server_client, server_make

ALIAS = cell_alias(CELL)


def _cell(url: str, tmp_path: Path) -> Cell:
    cell = cell_create(
        name=CELL,
        database_url=url,
        storage_root=str(tmp_path / "cell-x-storage"),
        smtp_host="acme.outboxment.test",
        imap_host="acme.outboxment.test",
    )
    lines: list[str] = []
    cell_provision(cell=cell, progress=lines.append)
    assert cell.state == CellState.READY, cell.progress
    assert (tmp_path / "cell-x-storage").is_dir()
    assert any("migrations applied" in line for line in lines), lines
    return cell


pytestmark = pytest.mark.django_db(transaction=True, databases=CELL_DATABASES)


@pytest.mark.worker
def test_a_cell_accounts_domain_and_mailbox_are_written_to_its_database_only(
    cell_url, account, other_account, celery_worker_thread, tmp_path
):
    _cell(cell_url, tmp_path)
    relay_id = account.relay.pk
    cell_assign(organization=account.org, cell_name=CELL)
    # The relay server made with the account moved along, id kept.
    assert not RelayServer.objects.using(DEFAULT_DB_ALIAS).filter(pk=relay_id).exists()
    assert RelayServer.objects.using(ALIAS).filter(pk=relay_id, organization=account.org).exists()
    # The cell holds a copy of the account's row, same primary key.
    assert Organization.objects.using(ALIAS).get(pk=account.org.pk).cell == CELL

    created = account.client.post(
        "/api/domains/", {"name": "acme.test", "relay_server": relay_id}, format="json"
    )
    assert created.status_code == 201, created.json()
    domain_id = created.json()["id"]
    assert Domain.objects.using(ALIAS).filter(pk=domain_id, name="acme.test").exists()
    assert not Domain.objects.using(DEFAULT_DB_ALIAS).filter(name="acme.test").exists()
    assert data_alias() == DEFAULT_DB_ALIAS  # the request left no routing behind

    Domain.objects.using(ALIAS).filter(pk=domain_id).update(verification_state="verified")
    task = account.client.post(
        "/api/mailboxes/",
        {
            "email": "john",
            "domain": domain_id,
            "relay_server": relay_id,
            "password": "Lunch-Secret-pass-1",
        },
        format="json",
    )
    assert task.status_code == 202, task.json()
    done = wait_for_task(account.client, task.json()["task_id"])  # a Celery job, routed
    assert done["status"] == "success", done
    assert Mailbox.objects.using(ALIAS).filter(domain_id=domain_id, local_part="john").exists()
    assert not Mailbox.objects.using(DEFAULT_DB_ALIAS).filter(local_part="john").exists()
    listing = account.client.get("/api/mailboxes/").json()
    assert [m["email"] for m in listing["results"]] == ["john@acme.test"]

    # Another account on shared: its own data in the default database, none of the cell's.
    theirs = verified_domain(other_account, "intruder.test")
    assert Domain.objects.using(DEFAULT_DB_ALIAS).filter(pk=theirs.pk).exists()
    assert other_account.client.get("/api/mailboxes/").json()["count"] == 0
    assert [d["name"] for d in other_account.client.get("/api/domains/").json()["results"]] == [
        "intruder.test"
    ]
    # A domain name is unique platform-wide: the cell's is taken for shared accounts too.
    taken = other_account.client.post(
        "/api/domains/",
        {"name": "acme.test", "relay_server": other_account.relay.pk},
        format="json",
    )
    assert taken.status_code == 409, taken.json()
    # Ids are per database: the same number may name each account's own row, never the
    # other's.
    seen = other_account.client.get(f"/api/domains/{domain_id}/")
    assert seen.status_code == 404 or seen.json()["name"] == "intruder.test"
    seen = account.client.get(f"/api/domains/{theirs.pk}/")
    assert seen.status_code == 404 or seen.json()["name"] == "acme.test"

    info = account.client.get("/api/userinfo/").json()
    assert info["ibx_smtp"] == info["ibx_imap"] == "acme.outboxment.test"
    assert info["single_tenant"] is True
    assert info["domains"] == 1 and info["mailboxes"] == 1
    other = other_account.client.get("/api/userinfo/").json()
    assert other["ibx_smtp"] == "localhost" and other["single_tenant"] is False

    # An operator's per-account names (`org set-hosts`) still win over the cell's.
    account.org.dedicated_smtp_host = "smtp.custom.test"
    account.org.save(update_fields=["dedicated_smtp_host"])
    assert account.client.get("/api/userinfo/").json()["ibx_smtp"] == "smtp.custom.test"
    # ... and the cell's copy of the account follows the registry's row.
    copy = Organization.objects.using(ALIAS).get(pk=account.org.pk)
    assert copy.dedicated_smtp_host == "smtp.custom.test"


def test_assign_refuses_an_account_that_has_data_and_a_cell_not_ready(cell_url, account, tmp_path):
    cell = _cell(cell_url, tmp_path)
    verified_domain(account)
    with pytest.raises(NotAllowed, match="live migration"):
        cell_assign(organization=account.org, cell_name=CELL)
    account.org.refresh_from_db()
    assert account.org.cell == "shared"
    with data_alias_using(ALIAS):
        assert not Domain.objects.exists()
    Cell.objects.filter(pk=cell.pk).update(state=CellState.FAILED)
    fresh = Organization.objects.exclude(pk=account.org.pk).first() or account.org
    with pytest.raises(NotAllowed, match="not ready"):
        cell_assign(organization=fresh, cell_name=CELL)


def test_server_keys_of_a_cell_account_find_their_server_in_the_cell(
    cell_url, account, other_account, tmp_path
):
    _cell(cell_url, tmp_path)
    cell_assign(organization=account.org, cell_name=CELL)
    with data_alias_using(ALIAS):
        access = server_make(account, name="on-the-cell")
    theirs = server_make(other_account, name="on-shared")
    assert EmailServer.objects.using(ALIAS).filter(name="on-the-cell").exists()
    assert not EmailServer.objects.using(DEFAULT_DB_ALIAS).filter(name="on-the-cell").exists()

    own = access.full_client.get("/api/server/")
    assert own.status_code == 200, own.json()
    assert own.json()["name"] == "on-the-cell"
    assert theirs.full_client.get("/api/server/").json()["name"] == "on-shared"
    changed = access.full_client.patch("/api/server/", {"color": "#000000"}, format="json")
    assert changed.status_code == 200, changed.json()
    assert EmailServer.objects.using(ALIAS).get(name="on-the-cell").color == "#000000"
    assert server_client("mps_" + "x" * 40).get("/api/server/").status_code == 401
