"""Runtime configuration read from the environment, shared by settings and the CLI.

Embedded mode (no variables set) keeps everything under one data directory: SQLite,
a file-system Celery transport, a generated secret key and self-signed TLS material.
Production mode is switched on piecemeal by DATABASE_URL, CELERY_BROKER_URL and
MAILPLANE_SECRET_KEY.
"""

from __future__ import annotations

import functools
import os
import secrets
import tempfile
from pathlib import Path


def under_pytest() -> bool:
    """pytest (>= 8.2) sets PYTEST_VERSION before any plugin imports our settings."""
    return "PYTEST_VERSION" in os.environ


@functools.cache
def data_dir() -> Path:
    """The state directory. Test runs that chose none get a fresh one each, so concurrent
    runs never share a database file or a queue directory."""
    configured = os.environ.get("MAILPLANE_DATA_DIR")
    if configured:
        path = Path(configured).resolve()
    elif under_pytest():
        path = Path(tempfile.mkdtemp(prefix="mailplane-test-"))
        os.environ["MAILPLANE_DATA_DIR"] = str(path)  # subprocesses of the run share it
    else:
        path = Path("var").resolve()
    # Raw mail, password hashes and keys live here: the owner's only (serve also tightens
    # one that exists already; see cli/serve.py private_state).
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def default_broker_url() -> str:
    """No broker server in embedded mode; tests use kombu's in-process transport.

    The file-system transport ignores the host, but kombu warns "No hostname was supplied"
    on every connection without one: name it.
    """
    return "memory://" if under_pytest() else "filesystem://localhost/"


def embedded_mode() -> bool:
    """SQLite in the data directory (no DATABASE_URL): one machine, a first run or a demo."""
    return not os.environ.get("DATABASE_URL", "").strip()


def accept_reserved_domains() -> bool:
    """Whether domains under the reserved TLDs of RFC 2606 / RFC 6761 (.test, .example,
    .invalid, .localhost) count as verified without DNS lookups.

    On by default in embedded mode, so that a first run reaches a working mailbox with no
    DNS of its own (no public resolver serves those names); off in production, where every
    domain is checked. MAILPLANE_ACCEPT_RESERVED_DOMAINS decides either way. Test runs keep
    it off unless a test turns it on: the suite's domains are under .test and many tests
    verify them through a fake DNS server.
    """
    if os.environ.get("MAILPLANE_ACCEPT_RESERVED_DOMAINS", "").strip():
        return env_bool("MAILPLANE_ACCEPT_RESERVED_DOMAINS")
    return embedded_mode() and not under_pytest()


def secret_keys() -> list[str]:
    """Keys for encryption at rest, newest first (comma-separated to allow rotation).

    Embedded mode generates one on first start and keeps it beside the database, readable
    only by its owner: losing it makes stored passwords and DKIM keys unreadable.
    """
    configured = os.environ.get("MAILPLANE_SECRET_KEY", "").strip()
    if configured:
        return [k.strip() for k in configured.split(",") if k.strip()]
    key_file = data_dir() / "secret.key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return [key_file.read_text().strip()]


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}
