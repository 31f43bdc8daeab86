"""Per-message mod-sequences for CONDSTORE (RFC 7162), kept beside each Maildir folder.

RFC 7162 §3: every change of a message's flags, and every expunge, gets a mod-sequence
higher than any the mailbox gave before, and the values survive restarts. Flags live in
Maildir file names, which carry no counter; dovecot-uidlist is rewritten whole on every
change. Here each folder has an append-only log, `mailplane-modseq`, of "<uid> <modseq>"
lines ("-<uid> <modseq>" for an expunge, which QRESYNC's VANISHED (EARLIER) reports,
RFC 7162 §3.2.5; "0 <modseq>" keeps the highest value across a compaction):
- a change appends one line per message under the folder's lock (flock across processes,
  `path_lock`), numbering from the highest value in the file, so two sessions or two
  processes never hand out one value twice;
- readers parse the file once and then only the bytes appended since (the cache is
  shared by every session of the process, keyed by path and checked by stat);
- a message without a line (delivered before CONDSTORE existed) has mod-sequence 1;
- when the log holds far more lines than messages it is rewritten (write, fsync, rename),
  keeping the newest `KEEP_EXPUNGED` expunges; "f <modseq>" then records the highest
  mod-sequence of those forgotten (below it the list of expunges is incomplete).

Durability: appended lines survive a restart of the process (they are in the kernel's
page cache), as do the flag renames they describe, which are not fsynced either; an fsync
per change cost ~4.5 ms here, on the event loop, per message of a STORE. After a crash of
the machine itself both may be lost together; a lost line alone would give its message an
older mod-sequence again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "MAX_MODSEQ",
    "MODSEQ_FILE",
    "ModSeqs",
    "modseq_bump",
    "modseq_lock_path",
    "modseqs_read",
]

MODSEQ_FILE = "mailplane-modseq"
# RFC 7162 §7: mod-sequence-value = 1*DIGIT, at most 2^63 - 1.
MAX_MODSEQ = 2**63 - 1
_COMPACT_SLACK = 4096  # lines beyond the number of messages before a rewrite
KEEP_EXPUNGED = 20_000  # expunges remembered for VANISHED (EARLIER) after a rewrite


@dataclass(slots=True)
class ModSeqs:
    """One folder's mod-sequences: per UID, and the highest given (at least 1)."""

    by_uid: dict[int, int] = field(default_factory=dict)
    highest: int = 1
    expunged: dict[int, int] = field(default_factory=dict)  # UID -> its expunge's modseq
    floor: int = 0  # expunges at or below this mod-sequence may be missing
    lines: int = 0
    offset: int = 0  # bytes of the file parsed so far
    inode: int = -1

    def of(self, uid: int) -> int:
        return self.by_uid.get(uid, 1)


_CACHE: dict[str, ModSeqs] = {}
_CACHE_MAX = 1024


def _path(folder: str) -> str:
    return os.path.join(folder, MODSEQ_FILE)


def modseqs_read(folder: str) -> ModSeqs:
    """The folder's mod-sequences as the file holds them now (do not modify the result)."""
    path = _path(folder)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ModSeqs()
    cached = _CACHE.get(path)
    if cached is None or cached.inode != st.st_ino or st.st_size < cached.offset:
        cached = ModSeqs(inode=st.st_ino)
    if st.st_size == cached.offset:
        return cached
    with open(path, "rb") as log:
        log.seek(cached.offset)
        data = log.read()
    end = data.rfind(b"\n") + 1  # a line still being written is read next time
    fresh = ModSeqs(
        dict(cached.by_uid),
        cached.highest,
        dict(cached.expunged),
        cached.floor,
        cached.lines,
        cached.offset + end,
        st.st_ino,
    )
    for line in data[:end].splitlines():
        uid_text, _, value_text = line.partition(b" ")
        try:
            value = int(value_text)
            if uid_text == b"f":
                fresh.floor = max(fresh.floor, value)
                continue
            uid = int(uid_text)
        except ValueError:
            continue  # a torn or foreign line: ignored, never fatal
        fresh.lines += 1
        if uid > 0:
            fresh.by_uid[uid] = value
        elif uid < 0:
            fresh.by_uid.pop(-uid, None)
            fresh.expunged[-uid] = value
        fresh.highest = max(fresh.highest, value)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[path] = fresh
    return fresh


def modseq_bump(
    folder: str,
    uids: Iterable[int],
    *,
    expunged: Iterable[int] = (),
    live: Iterable[int] = (),
) -> dict[int, int]:
    """Give each UID a new mod-sequence (and each expunged UID one); the values.

    The caller holds the folder's modseq lock (`modseq_lock_path`): the highest value is
    read and the new lines appended under it. `live` (the UIDs that still exist), when
    given, lets a compaction drop the lines of expunged messages.
    """
    wanted = list(dict.fromkeys(uids))
    gone = list(dict.fromkeys(expunged))
    if not wanted and not gone:
        return {}
    current = modseqs_read(folder)
    value = current.highest
    given: dict[int, int] = {}
    lines = []
    for uid in wanted:
        value += 1
        given[uid] = value
        lines.append(b"%d %d\n" % (uid, value))
    gone_at: dict[int, int] = {}
    for uid in gone:
        value += 1
        gone_at[uid] = value
        lines.append(b"-%d %d\n" % (uid, value))
    kept_entries = len(current.by_uid) + len(wanted) + min(len(current.expunged), KEEP_EXPUNGED)
    limit = 2 * kept_entries + _COMPACT_SLACK  # a rewrite at least halves the file
    if current.lines + len(lines) > limit:
        keep = {**current.by_uid, **given}
        alive = set(live)
        if alive:
            keep = {uid: seq for uid, seq in keep.items() if uid in alive or uid in given}
        for uid in gone_at:
            keep.pop(uid, None)
        expunges = sorted({**current.expunged, **gone_at}.items(), key=lambda kv: kv[1])
        dropped, kept = expunges[:-KEEP_EXPUNGED], expunges[-KEEP_EXPUNGED:]
        floor = max([current.floor, *(seq for _uid, seq in dropped)])
        _compact(folder, keep, dict(kept), value, floor)
    else:
        fd = os.open(_path(folder), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"".join(lines))  # O_APPEND: one write, never interleaved
        finally:
            os.close(fd)
    return given


def _compact(
    folder: str, by_uid: dict[int, int], expunged: dict[int, int], highest: int, floor: int
) -> None:
    tmp = f"{_path(folder)}.{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        if floor:
            out.write(b"f %d\n" % floor)
        out.writelines(b"-%d %d\n" % item for item in sorted(expunged.items()))
        out.writelines(b"%d %d\n" % item for item in sorted(by_uid.items()))
        out.write(b"0 %d\n" % highest)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, _path(folder))


def modseq_lock_path(folder: str) -> str:
    return os.path.join(folder, MODSEQ_FILE + ".lock")
