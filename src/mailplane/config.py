"""Runtime configuration read from the environment, shared by settings and the CLI.

Embedded mode (no variables set) keeps everything under one data directory: SQLite,
a file-system Celery transport, a generated secret key and self-signed TLS material.
Production mode is switched on piecemeal by DATABASE_URL, CELERY_BROKER_URL and
MAILPLANE_SECRET_KEY.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def data_dir() -> Path:
    path = Path(os.environ.get("MAILPLANE_DATA_DIR", "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}
