"""Durable Maildir delivery (tmp → fsync → rename into new/, then fsync the directory).

The stdlib `mailbox.Maildir.add` does not fsync; an MX that answers 250 must not lose
the message on power loss, so delivery is written here by hand, following the Maildir
protocol (https://cr.yp.to/proto/maildir.html).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mailplane.cells.routing import storage_root

# RFC 6154 special-use folders every mailbox gets, by their Maildir++ directory names.
SPECIAL_FOLDERS = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
_counter = itertools.count()
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def organization_storage_path(*, organization_id: int) -> Path:
    # The account's cell's root when the control plane works for it (cells/routing.py);
    # data-plane processes have their cell's root as MAILPLANE_STORAGE_ROOT.
    return Path(storage_root()) / f"org-{organization_id}"


def mailbox_storage_path(*, organization_id: int, address: str) -> Path:
    address = address.lower()
    if "/" in address or address.startswith("."):
        raise ValueError(f"unsafe mailbox address for a path: {address!r}")
    return organization_storage_path(organization_id=organization_id) / address


class UnsafeFolderPath(ValueError):
    """A folder that would not be a Maildir++ folder directly inside the mailbox's root."""


def maildir_folder_path(root: Path, parts: Sequence[str]) -> Path:
    """The directory of folder `parts` (INBOX is `[]`), refusing anything outside `root`.

    Maildir++ keeps every folder as one directory directly under the mailbox root, named
    "." + the components joined with "." (a/b is `.a.b`). A component that is empty, holds a
    "." or "/" or a control character could name the root itself (`""` → `.`), its parent
    (`"."` → `..`) or another folder's subtree, so it is refused here, at the last step
    before the file system, whatever the caller (pymap, delivery) passes. The result is
    then checked again after resolving symbolic links.
    """
    if not parts:
        return root
    for part in parts:
        if not isinstance(part, str) or not part or _UNSAFE_COMPONENT.search(part):
            raise UnsafeFolderPath(f"unsafe folder name component: {part!r}")
    name = "." + ".".join(parts)
    if len(os.fsencode(name)) > _NAME_MAX:
        raise UnsafeFolderPath(f"folder name too long: {len(name)} characters")
    path = root / name
    real_root = os.path.realpath(root)
    if os.path.dirname(os.path.realpath(path)) != real_root:
        raise UnsafeFolderPath(f"folder path leaves the mailbox: {path}")
    return path


# Components never hold the on-disk separator, a path separator or control characters;
# lone surrogates (from a bad modified UTF-7 name) cannot be written as a file name.
_UNSAFE_COMPONENT = re.compile(r"[./\x00-\x1f\x7f\ud800-\udfff]")
_NAME_MAX = 255  # bytes in one directory name (NAME_MAX on Linux file systems)


def _make_dir(path: Path) -> None:
    """mkdir 0700 (mkdir(parents=True) would give the parents the umask's mode, often 0755)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)


def _make_maildir(path: Path) -> None:
    _make_dir(path)
    for sub in ("cur", "new", "tmp"):
        _make_dir(path / sub)


def maildir_ensure(*, organization_id: int, address: str) -> Path:
    """Create the INBOX and the special folders if missing; return the mailbox root.

    Directories are 0700 and files 0600: mail is readable by the service's user only.
    """
    root = mailbox_storage_path(organization_id=organization_id, address=address)
    storage_root = root.parent.parent
    storage_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _make_dir(root.parent)
    _make_maildir(root)
    for folder in SPECIAL_FOLDERS:
        path = maildir_folder_path(root, [folder])
        _make_maildir(path)
        marker = path / "maildirfolder"
        if not marker.exists():
            os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600))
    return root


def _syncfs_function() -> Callable[[int], int] | None:
    """Linux syncfs(2), when available: flushes one file system in a single journal commit."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return fn


_SYNCFS = _syncfs_function()


def _sync_files(handles: list[BinaryIO]) -> None:
    """Make the data of every open file durable: syncfs once per file system, else fsync each.

    syncfs(2) (Linux >= 5.8 reports write-back errors from it) is as durable as one fsync per
    file and costs one journal commit for the whole batch instead of one per file.
    """
    if _SYNCFS is None or len(handles) < 2:
        for handle in handles:
            os.fsync(handle.fileno())
        return
    seen: set[int] = set()
    for handle in handles:
        device = os.fstat(handle.fileno()).st_dev
        if device in seen:
            continue
        seen.add(device)
        if _SYNCFS(handle.fileno()) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class MaildirItem:
    """One message for `maildir_deliver_many`."""

    organization_id: int
    address: str
    raw: bytes
    folder: str = "INBOX"


def _unique_name(size: int) -> str:
    now = time.time()
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{_HOST},S={size}"


# Mailbox roots this process has made complete (maildir_ensure: ~20 mkdir/stat calls). A
# root deleted since then is noticed when its tmp/ file cannot be created, and made again.
_ENSURED: set[Path] = set()


def _ensured_root(organization_id: int, address: str) -> Path:
    root = mailbox_storage_path(organization_id=organization_id, address=address)
    if root not in _ENSURED:
        maildir_ensure(organization_id=organization_id, address=address)
        _ENSURED.add(root)
    return root


def maildir_deliver_many(items: Sequence[MaildirItem]) -> list[Path]:
    """Write several messages durably; the paths in `new/`, in the order of `items`.

    Same protocol as one delivery, with the syncs shared: every file is written into tmp/
    and made durable (one syncfs per file system on Linux, else an fsync per file), then
    renamed into new/, then each distinct new/ directory is fsynced once.
    When this returns every file is durable; when it raises, none of them is left behind.
    """
    roots: dict[tuple[int, str], Path] = {}
    written: list[tuple[Path, Path]] = []  # (tmp, final)
    renamed: list[Path] = []
    handles: list[BinaryIO] = []
    try:
        for item in items:
            key = (item.organization_id, item.address.lower())
            if key not in roots:
                roots[key] = _ensured_root(item.organization_id, item.address)
            root = roots[key]
            parts = [] if item.folder == "INBOX" else item.folder.split("/")
            target = maildir_folder_path(root, parts)
            unique = _unique_name(len(item.raw))
            tmp_path = target / "tmp" / unique
            try:
                fd = os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileNotFoundError:  # removed since this process last made it: again
                _ENSURED.discard(root)
                roots[key] = _ensured_root(item.organization_id, item.address)
                fd = os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            handle = open(fd, "wb")  # noqa: SIM115 - closed below, after the sync
            handles.append(handle)
            written.append((tmp_path, target / "new" / unique))
            handle.write(item.raw)
            handle.flush()
        _sync_files(handles)  # data durable before the names appear in new/ (Maildir)
        for synced in handles:
            synced.close()
        for tmp_path, final in written:
            os.rename(tmp_path, final)
            renamed.append(final)
        for directory in dict.fromkeys(final.parent for _, final in written):
            _fsync_dir(directory)
    except BaseException:
        for unfinished in handles:
            unfinished.close()
        for tmp_path, _ in written:
            tmp_path.unlink(missing_ok=True)
        for final in renamed:
            final.unlink(missing_ok=True)
        raise
    return [final for _, final in written]


def maildir_deliver(
    *, organization_id: int, address: str, raw: bytes, folder: str = "INBOX"
) -> Path:
    """Write one message durably into `folder` ("INBOX" or a special folder name)."""
    item = MaildirItem(organization_id=organization_id, address=address, raw=raw, folder=folder)
    return maildir_deliver_many([item])[0]
