"""pymap's Maildir++ layout, confined to one mailbox's tree.

pymap turns a folder name into a path by string joining (`"." + ".".join(parts)`), so the
name "." became `..` (the organization's directory, which DELETE then emptied) and "" the
mailbox root itself. The IMAP backend validates names first (`mailplane.imap.names`); this
layout is the second, independent line: every path pymap derives goes through
`maildir_folder_path`, which refuses anything that is not a folder directly inside the
mailbox root, and the destructive operations refuse the root (INBOX) outright. It is
imported by the IMAP backend only, so delivery does not import pymap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from mailbox import Maildir
from pathlib import Path
from typing import TypeVar

from pymap.backend.maildir.layout import DefaultLayout

from mailplane.storage.maildir import UnsafeFolderPath, maildir_folder_path

__all__ = ["ConfinedLayout", "UnsafeFolderPath"]

_MaildirT = TypeVar("_MaildirT", bound=Maildir)


class ConfinedLayout(DefaultLayout[_MaildirT]):
    """Maildir++ (`.a.b` for a/b) where no derived path can leave the mailbox root."""

    def _get_path(self, parts: Sequence[str]) -> str:
        return str(maildir_folder_path(Path(self._path), parts))

    def add_folder(self, name: str, delimiter: str) -> None:
        # pymap's steps without its parent check, which looked for `.INBOX` when creating
        # "INBOX/a/b" (INBOX is the root): Maildir++ folders are flat directories, and the
        # IMAP mailbox set creates the superior names itself.
        parts = self._split(name, delimiter)
        if not parts:
            raise UnsafeFolderPath("the mailbox root (INBOX) is not a sub-folder")
        path = self._get_path(parts)  # raises before anything is created
        self._maildir(path, create=True)
        # The marker is private like the mail (pymap's open() gives it the umask's mode).
        os.close(os.open(os.path.join(path, "maildirfolder"), os.O_CREAT | os.O_EXCL, 0o600))

    def remove_folder(self, name: str, delimiter: str) -> None:
        parts = self._split(name, delimiter)
        if not parts:
            raise UnsafeFolderPath("the mailbox root (INBOX) is never removed")
        self._get_path(parts)  # raises before anything is touched
        super().remove_folder(name, delimiter)

    def rename_folder(self, source_name: str, dest_name: str, delimiter: str) -> None:
        source, dest = self._split(source_name, delimiter), self._split(dest_name, delimiter)
        if not source or not dest:
            raise UnsafeFolderPath("the mailbox root (INBOX) is never renamed")
        self._get_path(source)
        self._get_path(dest)
        super().rename_folder(source_name, dest_name, delimiter)

    def _rename_folder(self, source_parts: Sequence[str], dest_parts: Sequence[str]) -> None:
        # pymap's loop, with each destination (the folder and its sub-folders) checked.
        subdir = self._get_subdir(source_parts)
        dest_subdir = self._get_subdir(dest_parts)
        moves: list[tuple[str, str]] = []
        for elem in os.listdir(self._path):
            if elem == subdir or elem.startswith(subdir + "."):
                elem_path = os.path.join(self._path, elem)
                if os.path.isdir(elem_path) and not os.path.islink(elem_path):
                    dest_elem = dest_subdir + elem[len(subdir) :]
                    dest_path = self._get_path(self._get_parts(dest_elem))
                    moves.append((elem_path, dest_path))
        for elem_path, dest_path in moves:
            os.rename(elem_path, dest_path)
