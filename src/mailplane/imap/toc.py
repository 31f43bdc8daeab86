"""A Maildir whose table of contents is listed once per command, not once per lookup.

The stdlib's `mailbox.Maildir` keeps a table of contents (key → "cur/<name>") and, on any
lookup whose cached file name no longer exists, lists cur/ and new/ again (with an `isdir`
per entry); within 2 s of the last listing it lists unconditionally. pymap looks every
message up by key for every command (`get_message_metadata`), so a command over n messages
cost n listings of n entries whenever names were stale: after every STORE (flags live in the
file name, so each STORE renames), and for every expunged message still in dovecot-uidlist.
imaptest's stress run measured 12.6 s per LOGIN, with 95 % of the time in `_refresh`.

Here:
- `toc_sync()` runs once per command (pymap resets the mailbox before each one). It stats
  new/ and cur/ and lists them only when their mtime_ns differ from the last listing's, on a
  worker thread so that the event loop serves other clients meanwhile. Internal dates (file
  mtimes) are read once per file: a rename keeps the mtime.
- Changes this object makes itself (add, flag renames, removals, new/ → cur/) update the
  table in place, so the rest of the command sees them without listing.
- A lookup is a dictionary read. A key missing from the table is gone (KeyError). A cached
  name whose file vanished since the listing (another session renamed or removed it) is
  re-listed at most once per directory change (`_relist_stale`), never once per lookup.

Trade-off, file-system timestamps: a directory's mtime has the granularity of the kernel's
coarse clock (a few ms locally, up to seconds on some network file systems), so two changes
in one tick leave one mtime. A listing is therefore trusted only once it was taken
`SETTLE_NS` after the mtime it saw; until then every sync lists again. And our own changes
never advance the recorded mtime (we cannot tell whether another writer changed the
directory in the same tick): the next sync after them lists once more. Under constant
change this costs one listing per command (O(n), in C, ~1 ms per 1,000 files); on a quiet
mailbox two stat calls.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from mailbox import MaildirMessage
from typing import Any

from pymap.backend.maildir.mailbox import Maildir

__all__ = ["TocMaildir"]


class _Listing:
    """One listing of new/ and cur/: the table, the internal dates, and when it was taken."""

    __slots__ = ("dates", "listed_at", "stamp", "toc")

    def __init__(
        self, toc: dict[str, str], dates: dict[str, float], stamp: tuple[int, int], at: int
    ) -> None:
        self.toc = toc
        self.dates = dates
        self.stamp = stamp
        self.listed_at = at


class TocMaildir(Maildir):
    """pymap's Maildir with a table of contents refreshed per command (see the module)."""

    # A listing taken less than this long after the directory mtime it saw may have missed
    # a change made in the same timestamp tick (see the module docstring).
    SETTLE_NS = 1_000_000_000

    def __init__(self, dirname: str, factory: Any = None, create: bool = True) -> None:
        super().__init__(dirname, factory, create)
        self._toc: dict[str, str] = {}
        self._dates: dict[str, float] = {}
        self._stamp: tuple[int, int] | None = None  # directory mtimes at the last listing
        self._listed_at = 0
        self._changes = 0  # bumped by every change we make; a scan racing one is dropped
        self.listings = 0  # how many times the directories were listed (for tests, stats)
        self.keys_version = 0  # bumped whenever a key appears: pymap's reset must number it

    # -- listing ---------------------------------------------------------------------------

    def _dir_stamp(self) -> tuple[int, int]:
        return (
            os.stat(self._path_new).st_mtime_ns,
            os.stat(self._path_cur).st_mtime_ns,
        )

    def _current(self, stamp: tuple[int, int]) -> bool:
        """Whether the last listing is known to hold everything up to `stamp`."""
        return stamp == self._stamp and self._listed_at - max(stamp) >= self.SETTLE_NS

    def _scan(self, dates: dict[str, float]) -> _Listing | None:
        """List new/ and cur/ if they changed since the last listing (thread-safe: no writes)."""
        stamp = self._dir_stamp()
        if self._current(stamp):
            return None
        listed_at = time.time_ns()
        toc: dict[str, str] = {}
        new_dates: dict[str, float] = {}
        colon = self.colon
        for subdir, path in (("new", self._path_new), ("cur", self._path_cur)):
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir():  # d_type from the directory: no stat
                        continue
                    key = entry.name.split(colon)[0]
                    toc[key] = subdir + "/" + entry.name
                    date = dates.get(key)
                    if date is None:
                        try:
                            date = entry.stat().st_mtime
                        except FileNotFoundError:  # removed while we listed
                            del toc[key]
                            continue
                    new_dates[key] = date
        # The stamp read before the listing: a change during it leaves a newer mtime, and
        # the next sync lists again.
        return _Listing(toc, new_dates, stamp, listed_at)

    def _install(self, listing: _Listing | None) -> bool:
        if listing is None:
            return False
        if listing.toc.keys() - self._toc.keys():
            self.keys_version += 1
        self._toc, self._dates = listing.toc, listing.dates
        self._stamp, self._listed_at = listing.stamp, listing.listed_at
        self.listings += 1
        return True

    async def toc_sync(self) -> bool:
        """Bring the table up to date with the directories (off the loop); True if listed."""
        changes = self._changes
        listing = await asyncio.to_thread(self._scan, self._dates)
        if changes != self._changes:
            # We changed the mailbox while the thread listed: its table may predate that
            # change. Keep ours (it has the change) and list again next time.
            self._stamp = None
            return False
        return self._install(listing)

    def _refresh(self) -> None:
        # The stdlib calls this from keys(), __contains__, __len__ and every failed lookup.
        # Listing is `toc_sync`'s job, once per command; only a first use lists here.
        if self._stamp is None and not self.listings:
            self._install(self._scan(self._dates))

    def _relist_stale(self) -> bool:
        """A cached name's file is gone: list again if the directories changed since."""
        try:
            stamp = self._dir_stamp()
        except FileNotFoundError:
            return False
        if self._current(stamp):
            return False  # nothing changed since a trusted listing: the message is gone
        return self._install(self._scan(self._dates))

    def toc_infos(self) -> dict[str, str]:
        """Every key with its info part ("2,S"), as pymap's reset wants them."""
        colon = self.colon
        infos = {}
        for key, subpath in self._toc.items():
            name = subpath.partition("/")[2]
            infos[key] = name.rsplit(colon, 1)[1] if colon in name else ""
        return infos

    def toc_has(self, keys: Iterable[str]) -> bool:
        """Whether every key is in the table (no file-system call)."""
        toc = self._toc
        return all(key in toc for key in keys)

    # -- lookups ---------------------------------------------------------------------------

    def _lookup(self, key: str) -> str:
        if self._stamp is None and not self.listings:
            self._refresh()
        try:
            return self._toc[key]
        except KeyError:
            raise KeyError(f"No message with key: {key}") from None

    def lookup_fresh(self, key: str) -> str:
        """The key's current sub-path, checked on disk (one stat); KeyError if it is gone."""
        subpath = self._lookup(key)
        if os.path.exists(os.path.join(self._path, subpath)):
            return subpath
        if self._relist_stale():
            return self._lookup(key)
        raise KeyError(f"No message with key: {key}")

    def content_exists(self, key: str) -> bool:
        """Whether the key's file is still there (another session may have expunged it)."""
        try:
            self.lookup_fresh(key)
        except KeyError:
            return False
        return True

    def get_message_metadata(self, key: str) -> MaildirMessage:
        """Flags, subdirectory and internal date from the table: no file-system call."""
        subpath = self._lookup(key)
        subdir, _, name = subpath.partition("/")
        msg = MaildirMessage()
        msg.set_subdir("new" if subdir == "new" else "cur")
        if self.colon in name:
            msg.set_info(name.rsplit(self.colon, 1)[-1])
        date = self._dates.get(key)
        if date is None:
            date = os.path.getmtime(os.path.join(self._path, subpath))
            self._dates[key] = date
        msg.set_date(date)
        return msg

    def get_bytes(self, key: str) -> bytes:
        try:
            return super().get_bytes(key)
        except FileNotFoundError:
            if not self._relist_stale():
                raise KeyError(f"No message with key: {key}") from None
            return super().get_bytes(key)

    def get_file(self, key: str) -> Any:
        try:
            return super().get_file(key)
        except FileNotFoundError:
            if not self._relist_stale():
                raise KeyError(f"No message with key: {key}") from None
            return super().get_file(key)

    # -- our own changes, applied to the table in place --------------------------------------

    def add(self, message: Any) -> str:
        key: str = super().add(message)
        if isinstance(message, MaildirMessage):
            subdir, info = message.get_subdir(), message.get_info()
        else:
            subdir, info = "new", ""
        name = key + self.colon + info if info else key
        self._changes += 1
        self.keys_version += 1
        self._toc[key] = subdir + "/" + name
        self._dates[key] = os.path.getmtime(os.path.join(self._path, subdir, name))
        return key

    def remove(self, key: str) -> None:
        os.remove(os.path.join(self._path, self.lookup_fresh(key)))
        self._changes += 1
        self._toc.pop(key, None)
        self._dates.pop(key, None)

    def update_metadata(self, key: str, msg: MaildirMessage) -> None:
        """Rename the file to carry `msg`'s flags (the name is checked on disk first)."""
        subpath = self.lookup_fresh(key)
        subdir, _, name = subpath.partition("/")
        new_name = key + self.colon + msg.get_info()
        if subdir != msg.get_subdir():
            raise ValueError("Message subdir may not be updated")
        if name == new_name:
            return
        new_subpath = subdir + "/" + new_name
        os.rename(os.path.join(self._path, subpath), os.path.join(self._path, new_subpath))
        self._changes += 1
        self._toc[key] = new_subpath

    def move_message(self, key: str, dest: Maildir, dest_subdir: str) -> str:
        subpath = self.lookup_fresh(key)
        name = subpath.partition("/")[2]
        os.rename(os.path.join(self._path, subpath), os.path.join(dest._path, dest_subdir, name))
        self._changes += 1
        self._toc.pop(key, None)
        date = self._dates.pop(key, None)
        if isinstance(dest, TocMaildir):
            dest._changes += 1
            dest.keys_version += 1
            dest._toc[key] = dest_subdir + "/" + name
            if date is not None:
                dest._dates[key] = date
        return name

    def claim_new(self) -> Iterable[str]:
        """Move new/ messages to cur/ (RFC 3501 \\Recent is claimed once); their keys."""
        claimed = []
        new_dir, cur_dir = self._path_new, self._path_cur
        for name in os.listdir(new_dir):
            try:
                os.rename(os.path.join(new_dir, name), os.path.join(cur_dir, name))
            except FileNotFoundError:  # claimed by another session first
                continue
            key = name.split(self.colon)[0]
            self._changes += 1
            self._toc[key] = "cur/" + name
            claimed.append(key)
        return claimed
