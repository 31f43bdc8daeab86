"""The storage layer itself refuses folder paths outside the mailbox (issue 8, defect 1).

These drive `maildir_folder_path` and the pymap layout directly, without the IMAP name
checks in front of them, so a future pymap call path that skips those checks still cannot
reach the organization's directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailplane.imap.backend import CrlfMaildir
from mailplane.storage import maildir_deliver, maildir_ensure
from mailplane.storage.layout import ConfinedLayout
from mailplane.storage.maildir import UnsafeFolderPath, maildir_folder_path
from tests.support.fs_snapshot import tree_snapshot

HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "./x",
    "../x",
    "a/../../x",
    "a/./b",
    "/abs",
    "a/",
    ".hidden",
    "a.b",
    "a\x00b",
    "a\nb",
    "\ud800",
    "x" * 300,
]


@pytest.fixture
def org(settings, tmp_path) -> tuple[Path, Path, Path]:
    """An organization with two mailboxes; the sibling has mail in its INBOX and Sent."""
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path)}
    caller = maildir_ensure(organization_id=1, address="caller@a.test")
    sibling = maildir_ensure(organization_id=1, address="sibling@a.test")
    maildir_deliver(organization_id=1, address="sibling@a.test", raw=b"Subject: s\r\n\r\n1\r\n")
    maildir_deliver(organization_id=1, address="sibling@a.test", raw=b"x", folder="Sent")
    return tmp_path / "org-1", caller, sibling


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_folder_path_refuses_names_that_leave_the_folder_level(org, name):
    _, caller, _ = org
    with pytest.raises(UnsafeFolderPath):
        maildir_folder_path(caller, name.split("/"))


def test_folder_path_refuses_a_symlink_out_of_the_mailbox(org):
    org_dir, caller, _ = org
    (caller / ".Evil").symlink_to(org_dir)
    with pytest.raises(UnsafeFolderPath):
        maildir_folder_path(caller, ["Evil"])


def test_folder_path_of_a_real_folder(org):
    _, caller, _ = org
    assert maildir_folder_path(caller, ["Work", "2026"]) == caller / ".Work.2026"
    assert maildir_folder_path(caller, []) == caller


@pytest.mark.parametrize("name", [*HOSTILE_NAMES, "INBOX"])
def test_layout_refuses_every_destructive_call_and_touches_nothing(org, name):
    org_dir, caller, _ = org
    layout = ConfinedLayout(str(caller), CrlfMaildir)
    before = tree_snapshot(org_dir)
    calls = [
        lambda: layout.remove_folder(name, "/"),
        lambda: layout.rename_folder("Sent", name, "/"),
        lambda: layout.rename_folder(name, "Moved", "/"),
        lambda: layout.add_folder(name, "/"),
    ]
    if name != "INBOX":
        calls += [
            lambda: layout.get_path(name, "/"),
            lambda: layout.get_folder(name, "/"),
        ]
    for call in calls:
        with pytest.raises(UnsafeFolderPath):
            call()
    assert tree_snapshot(org_dir) == before


def test_delete_dot_cannot_reach_the_organization(org):
    """The reported defect at this layer: "." used to become `<mailbox>/..`, the org dir."""
    _org_dir, caller, sibling = org
    before = tree_snapshot(sibling)
    layout = ConfinedLayout(str(caller), CrlfMaildir)
    with pytest.raises(UnsafeFolderPath):
        layout.remove_folder(".", "/")
    assert tree_snapshot(sibling) == before and before


def test_layout_still_creates_renames_and_removes_real_folders(org):
    _, caller, _ = org
    layout = ConfinedLayout(str(caller), CrlfMaildir)
    layout.add_folder("Work", "/")
    layout.add_folder("Work/2026", "/")
    assert stat.S_IMODE((caller / ".Work" / "maildirfolder").stat().st_mode) == 0o600
    layout.rename_folder("Work", "Archive", "/")
    assert {".Archive", ".Archive.2026"} <= set(os.listdir(caller))
    assert not (caller / ".Work").exists()
    layout.remove_folder("Archive/2026", "/")
    assert not (caller / ".Archive.2026").exists() and (caller / ".Archive").is_dir()
    assert "Archive" in layout.list_folders("/")


def test_delivery_refuses_an_unsafe_folder(org):
    org_dir, _, _ = org
    before = tree_snapshot(org_dir)
    for folder in ("..", ".", "", "../sibling@a.test"):
        with pytest.raises(UnsafeFolderPath):
            maildir_deliver(organization_id=1, address="caller@a.test", raw=b"x", folder=folder)
    assert tree_snapshot(org_dir) == before


def test_mail_is_private_files_0600_directories_0700(settings, tmp_path):
    """Issue 8 item 9: delivered mail was 0644, readable by every local user."""
    settings.MAILPLANE = {**settings.MAILPLANE, "STORAGE_ROOT": str(tmp_path / "storage")}
    path = maildir_deliver(organization_id=3, address="p@a.test", raw=b"x", folder="Sent")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    root = tmp_path / "storage" / "org-3" / "p@a.test"
    for directory in (root.parent, root, root / "cur", root / ".Sent", root / ".Sent" / "new"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE((root / ".Sent" / "maildirfolder").stat().st_mode) == 0o600
