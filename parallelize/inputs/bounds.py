"""Where input may come from: inside its root, and never from a path the run itself writes.

A directory PATH is its own root; file PATHs, `--files-from` entries and stdin have the working
directory as root. A symlink found inside a root whose target resolves outside it is skipped
("symlink-outside"), so a repository written by a stranger cannot point `notes.md` at
`~/.netrc`; a symlink named on the command line is followed (you asked for it). A
`--files-from` entry outside the working directory is refused unless `--allow-outside` is given.

The `-o` file, the `--out-dir` folder and the call cache are "reserved": a walk leaves them out
(reason "output"), so a second run with `-o src/out.md` over `src/` does not read its own last
answer; naming one of them as PATH (the same file or folder, by any name) is an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError, first_few
from .frames import display_name


@dataclass(frozen=True)
class Reserved:
    """A path this run writes (a file or a folder) and the flag that named it."""

    path: str
    flag: str


@dataclass(frozen=True)
class Bounds:
    """What the caller allows: reading --files-from entries outside the cwd; paths never read."""

    allow_outside: bool = False
    reserved: tuple[Reserved, ...] = ()


def within(path: str, root: str) -> bool:
    """Whether `path` is `root` or inside it (both absolute and normalized)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Fence:
    """The bounds, resolved once for a discovery: the working directory, the reserved stats."""

    def __init__(self, bounds: Bounds | None = None) -> None:
        bounds = bounds or Bounds()
        self.allow_outside = bounds.allow_outside
        self.cwd = os.getcwd()
        self.real_cwd = os.path.realpath(self.cwd)
        self._stats: dict[tuple[int, int], Reserved] = {}
        for item in bounds.reserved:
            try:
                info = os.stat(item.path)
            except OSError:  # not written yet: nothing to leave out
                continue
            self._stats[(info.st_dev, info.st_ino)] = item
        self._inodes = {ino for _, ino in self._stats}

    def check_listed(self, entries: Sequence[str]) -> None:
        """Refuse --files-from entries outside the working directory (unless allowed)."""
        if self.allow_outside:
            return
        outside = [display_name(raw) for raw in entries if not self._inside_cwd(raw)]
        if outside:
            raise InputError(
                f"--files-from lists {first_few(outside)}, outside the working directory "
                f"{self.cwd}",
                hint="run from a directory that holds them, or pass --allow-outside to read them",
            )

    def _inside_cwd(self, raw: str) -> bool:
        full = os.path.normpath(os.path.join(self.cwd, raw))
        return within(full, self.cwd) or within(os.path.realpath(full), self.real_cwd)

    def listed_escapes(self, raw: str) -> bool:
        """Whether a --files-from entry resolves (through a symlink) outside the working dir."""
        return not self.allow_outside and not within(os.path.realpath(raw), self.real_cwd)

    def check_named(self, raw: str) -> None:
        """A PATH that is the -o file, the --out-dir folder or the cache is an error.

        Only the same file or folder: a PATH inside the out-dir was asked for by name, and a
        cache folder may hold the inputs' folder too.
        """
        item = self.reserved_stat(raw)
        if item is not None:
            raise InputError(
                f"{item.flag} {display_name(item.path)}: the input {display_name(raw)} is also "
                "where this run writes",
                hint=f"choose another {item.flag}, or leave it out of the inputs",
            )

    def reserved_stat(self, path: str, *, follow: bool = True) -> Reserved | None:
        """The reserved path that `path` is (same file or folder), if any."""
        if not self._stats:
            return None
        try:
            info = os.stat(path, follow_symlinks=follow)
        except OSError:
            return None
        return self._stats.get((info.st_dev, info.st_ino))

    def reserved_entry(self, entry: os.DirEntry[str]) -> bool:
        """Whether a walked entry is a reserved file or folder (the inode test is free)."""
        try:
            candidate = entry.inode() in self._inodes
        except OSError:
            return False
        return candidate and self.reserved_stat(entry.path, follow=False) is not None
