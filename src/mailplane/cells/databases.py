"""Cell databases as Django aliases (`cell_<name>`), added to `connections.databases` when
first needed, and created on their server when provisioned.

Nothing here prints or logs a database URL: it carries the password. Errors name the
host and database only (`database_describe`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from mailplane.core.errors import Unavailable, ValidationFailed

ALIAS_PREFIX = "cell_"
ENGINES = {"postgres", "postgresql", "pgsql", "sqlite"}


def cell_alias(name: str) -> str:
    return f"{ALIAS_PREFIX}{name.replace('-', '_')}"


def database_config(url: str) -> dict[str, Any]:
    """Django's settings for a cell database URL, or ValidationFailed on `database_url`:
    PostgreSQL, or SQLite (a file, embedded mode) with an absolute path."""
    url = url.strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in ENGINES:
        raise ValidationFailed.on(
            "database_url", "must be a postgres:// or sqlite:/// URL (absolute file path)"
        )
    try:
        conf: dict[str, Any] = dict(dj_database_url.parse(url))
    except Exception as exc:  # dj_database_url raises plain ValueErrors and KeyErrors
        raise ValidationFailed.on(
            "database_url", f"not a database URL ({type(exc).__name__})"
        ) from None
    default = settings.DATABASES[DEFAULT_DB_ALIAS]
    if conf["ENGINE"].endswith("sqlite3"):
        if not Path(str(conf["NAME"])).is_absolute() or str(conf["NAME"]) == ":memory:":
            raise ValidationFailed.on("database_url", "a SQLite cell needs an absolute file path")
        # The same pragmas as the default database (settings.py): WAL, FULL, IMMEDIATE.
        conf["CONN_MAX_AGE"] = 0
        if default["ENGINE"].endswith("sqlite3"):
            conf["OPTIONS"] = copy.deepcopy(default.get("OPTIONS", {}))
    else:
        if not conf.get("NAME"):
            raise ValidationFailed.on("database_url", "names no database")
        conf["CONN_MAX_AGE"] = default.get("CONN_MAX_AGE", 0)
    # Django's ConnectionHandler fills these in for the configured aliases only.
    for key, value in (
        ("ATOMIC_REQUESTS", False),
        ("AUTOCOMMIT", True),
        ("CONN_HEALTH_CHECKS", False),
        ("OPTIONS", {}),
        ("TIME_ZONE", None),
        ("USER", ""),
        ("PASSWORD", ""),
        ("HOST", ""),
        ("PORT", ""),
    ):
        conf.setdefault(key, value)
    conf["TEST"] = {"MIRROR": None, "NAME": None, "CHARSET": None, "COLLATION": None}
    return conf


def database_describe(conf: dict[str, Any]) -> str:
    """Where a database is, for messages: engine, host and name, never the password."""
    if str(conf["ENGINE"]).endswith("sqlite3"):
        return f"SQLite file {conf['NAME']}"
    host = conf.get("HOST") or "localhost"
    port = f":{conf['PORT']}" if conf.get("PORT") else ""
    return f"PostgreSQL database {conf['NAME']!r} on {host}{port}"


def url_masked(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def alias_register(*, name: str, url: str) -> str:
    """Make `cell_<name>` a Django alias for `url` in this process; returns the alias.
    A changed URL replaces the alias's settings and closes its old connection."""
    alias = cell_alias(name)
    conf = database_config(url)
    current = connections.databases.get(alias)
    if current is not None and current == conf:
        return alias
    if current is not None:
        connections[alias].close()
        del connections[alias]
    connections.databases[alias] = conf
    return alias


def database_create(conf: dict[str, Any]) -> bool:
    """Create the database if it is missing; True if it was created.

    PostgreSQL: connect to the server's `postgres` database with the cell's credentials and
    CREATE DATABASE (the role needs CREATEDB, or an operator creates it first). SQLite: the
    directory; the file appears on first connection. Unavailable when the server cannot be
    reached or refuses, with its reason and no password."""
    if str(conf["ENGINE"]).endswith("sqlite3"):
        path = Path(str(conf["NAME"]))
        existed = path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise Unavailable(f"cannot create {path.parent}: {exc.strerror}") from None
        return not existed
    import psycopg
    from psycopg import sql

    where = database_describe(conf)
    params: dict[str, Any] = {
        "dbname": "postgres",
        "user": conf.get("USER") or None,
        "password": conf.get("PASSWORD") or None,
        "host": conf.get("HOST") or None,
        "port": conf.get("PORT") or None,
        "connect_timeout": 5,
    }
    try:
        with psycopg.connect(
            **{k: v for k, v in params.items() if v is not None}, autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [conf["NAME"]]
            ).fetchone()
            if exists:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(conf["NAME"])))
            return True
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unavailable(f"cannot create {where}: {reason}") from None
