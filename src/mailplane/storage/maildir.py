"""Durable Maildir delivery (tmp → fsync → rename into new/, then fsync the directory).

The stdlib `mailbox.Maildir.add` does not fsync; an MX that answers 250 must not lose
the message on power loss, so delivery is written here by hand, following the Maildir
protocol (https://cr.yp.to/proto/maildir.html).
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from django.conf import settings

# RFC 6154 special-use folders every mailbox gets, by their Maildir++ directory names.
SPECIAL_FOLDERS = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def organization_storage_path(*, organization_id: int) -> Path:
    return Path(str(settings.MAILPLANE["STORAGE_ROOT"])) / f"org-{organization_id}"


def mailbox_storage_path(*, organization_id: int, address: str) -> Path:
    address = address.lower()
    if "/" in address or address.startswith("."):
        raise ValueError(f"unsafe mailbox address for a path: {address!r}")
    return organization_storage_path(organization_id=organization_id) / address


def _make_maildir(path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


def maildir_ensure(*, organization_id: int, address: str) -> Path:
    """Create the INBOX and the special folders if missing; return the mailbox root."""
    root = mailbox_storage_path(organization_id=organization_id, address=address)
    _make_maildir(root)
    for folder in SPECIAL_FOLDERS:
        _make_maildir(root / f".{folder}")
        (root / f".{folder}" / "maildirfolder").touch(exist_ok=True)
    return root


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def maildir_deliver(
    *, organization_id: int, address: str, raw: bytes, folder: str = "INBOX"
) -> Path:
    """Write one message durably into `folder` ("INBOX" or a special folder name)."""
    root = maildir_ensure(organization_id=organization_id, address=address)
    target = root if folder == "INBOX" else root / f".{folder}"
    now = time.time()
    unique = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{_HOST},S={len(raw)}"
    tmp_path = target / "tmp" / unique
    with open(tmp_path, "xb") as handle:
        handle.write(raw)
        handle.flush()
        os.fsync(handle.fileno())
    final = target / "new" / unique
    os.rename(tmp_path, final)
    _fsync_dir(target / "new")
    return final
