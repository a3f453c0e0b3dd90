"""The user's own cache directory, and how to tell whether a directory tree changed.

Imported by conftest.py before it moves HOME into a temporary directory, so `REAL_CACHE` is the
directory a run of parallelize writes to outside the suite (PARALLELIZE_CACHE_DIR if the user set
one, else the platform's user cache directory).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

REAL_CACHE = Path(
    os.environ.get("PARALLELIZE_CACHE_DIR")
    or platformdirs.user_cache_dir("parallelize", appauthor=False)
).expanduser()

#: A file or folder: (kind, size, mtime in ns); a folder's mtime moves when an entry comes or goes.
Entry = tuple[str, int, int]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path under `root` (itself included) with its kind, size and modification time."""
    found: dict[str, Entry] = {}
    if not root.exists():
        return found
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(folder, name)
            try:
                info = path.lstat()
            except OSError:  # removed while walking: the next snapshot says so
                continue
            kind = "dir" if path.is_dir() and not path.is_symlink() else "file"
            found[str(path.relative_to(root))] = (kind, info.st_size, info.st_mtime_ns)
    return found


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """What differs between two snapshots, one `added/removed/changed: path` per path."""
    out = [f"added: {p}" for p in sorted(after.keys() - before.keys())]
    out += [f"removed: {p}" for p in sorted(before.keys() - after.keys())]
    out += [f"changed: {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return out
