"""A snapshot of a directory tree, to prove that an operation left it alone."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under `root` (relative path → mode, size, content digest); `{}` if absent.

    Symbolic links are recorded, not followed; directories have an empty digest.
    """
    entries: dict[str, tuple[int, int, str]] = {}
    if not os.path.lexists(root):
        return entries
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            st = path.lstat()
            digest = ""
            if path.is_file() and not path.is_symlink():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries[str(path.relative_to(root))] = (st.st_mode, st.st_size, digest)
    return entries
