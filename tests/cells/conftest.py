"""A second cell for tests: a PostgreSQL database of its own (mailplane_cells_x) in the
PostgreSQL pass, a second SQLite file in the SQLite pass. Dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from mailplane.cells.databases import alias_register, cell_alias

CELL = "x"
PG_NAME = "mailplane_cells_x"
CELL_DATABASES = [DEFAULT_DB_ALIAS, cell_alias(CELL)]


def _pg_admin_params() -> dict[str, Any]:
    conf = connections.databases[DEFAULT_DB_ALIAS]
    params = {
        "dbname": "postgres",
        "user": conf.get("USER") or None,
        "password": conf.get("PASSWORD") or None,
        "host": conf.get("HOST") or None,
        "port": conf.get("PORT") or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def pg_drop(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(**_pg_admin_params(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def cell_database_url(tmp_path: Path, name: str = PG_NAME) -> str:
    conf = connections.databases[DEFAULT_DB_ALIAS]
    if conf["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{tmp_path / (name + '.sqlite3')}"
    auth = conf.get("USER") or "postgres"
    if conf.get("PASSWORD"):
        auth += f":{conf['PASSWORD']}"
    host = conf.get("HOST") or "127.0.0.1"
    port = conf.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{name}"


def forget_alias(name: str) -> None:
    alias = cell_alias(name)
    if alias in connections.databases:
        connections[alias].close()
        del connections[alias]
        del connections.databases[alias]


def _postgres() -> bool:
    return not connections.databases[DEFAULT_DB_ALIAS]["ENGINE"].endswith("sqlite3")


@pytest.fixture(scope="session", autouse=True)
def _cell_alias() -> Iterator[str]:
    """The second cell's alias, known before any test's database fixtures start (a test
    marked `django_db(databases=CELL_DATABASES)` may then reach it, from other threads
    too); its database is made by each test's provisioning and dropped at the end."""
    url = cell_database_url(Path(settings.DATA_DIR))
    alias_register(name=CELL, url=url)
    yield url
    forget_alias(CELL)
    _cell_database_drop(url)


def _cell_database_drop(url: str) -> None:
    alias = cell_alias(CELL)
    if alias in connections.databases:
        connections[alias].close()
    if _postgres():
        pg_drop(PG_NAME)
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)


@pytest.fixture
def cell_url(_cell_alias: str) -> str:
    """The second cell's database URL; the database does not exist yet."""
    _cell_database_drop(_cell_alias)
    return _cell_alias
