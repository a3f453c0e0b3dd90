"""Where tools may look: the input root, with the same rules as the inputs.

The files a tool may open are the ones a walk of the root would read as inputs: .gitignore'd,
VCS, tool-cache and secret files are left out (and credential configs such as .npmrc, which the
inputs read only when no token is found in them), a symlink whose target leaves the root is left
out, and so are the paths this run writes (its cache). A path from the model must be relative,
without `..`, and name one of those files (or a folder that holds some).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from ..inputs.bounds import Bounds, Fence, Reserved
from ..inputs.secrets import CONFIG_NAMES
from ..inputs.walk import PathRules, iter_sources

#: Files a root may hold, and seconds its walk may take: beyond either, tools refuse it
#: (a home folder or a disk's root) instead of holding every call while it is listed.
MAX_ROOT_FILES = 50_000
WALK_SECONDS = 10.0


class Refused(Exception):
    """A path or argument a tool will not use; the message goes back to the model."""


class RootFiles:
    """The files under one root that tools may read, found once on first use."""

    def __init__(self, root: str, *, reserved: Sequence[Reserved] = ()) -> None:
        self.root = os.path.abspath(root)
        self._reserved = tuple(reserved)
        self._files: dict[str, str] | None = None
        self._too_big: str | None = None
        self._dirs: set[str] = set()
        self._lock = threading.Lock()
        self.max_files = MAX_ROOT_FILES
        self.walk_seconds = WALK_SECONDS

    def files(self) -> dict[str, str]:
        """Relative path (with `/`) -> the path to open, for every file a tool may read."""
        with self._lock:  # held for one bounded walk, once
            if self._files is None and self._too_big is None:
                try:
                    self._files = self._walk()
                except Refused as exc:
                    self._too_big = str(exc)
            if self._files is None:
                raise Refused(self._too_big or "the root could not be listed")
            return self._files

    def _walk(self) -> dict[str, str]:
        fence = Fence(Bounds(reserved=self._reserved))
        found: dict[str, str] = {}
        rules = PathRules()
        deadline = time.monotonic() + self.walk_seconds
        too_big = (
            f"the tool root {self.root} holds more than {self.max_files:,} files or took over "
            f"{self.walk_seconds:g} s to list; the run should name a smaller folder (--tool-root)"
        )

        def bounded(*_: object) -> None:  # called for every file the walk leaves out
            if time.monotonic() > deadline:
                raise Refused(too_big)

        for source in iter_sources([self.root], [], rules, bounded, None, fence):
            if len(found) >= self.max_files or time.monotonic() > deadline:
                raise Refused(too_big)
            if os.path.basename(source.path) in CONFIG_NAMES:
                continue  # .npmrc, .pypirc: inputs read one without a token; tools never need it
            rel = os.path.relpath(source.path, self.root).replace(os.sep, "/")
            found[rel] = source.path
            parts = rel.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                self._dirs.add("/".join(parts[:depth]))
        return found

    def relative(self, raw: object, *, what: str = "path") -> str:
        """The model's path as a clean relative path ("." for the root), or Refused."""
        if raw is None or raw == "":
            return "."
        if not isinstance(raw, str):
            raise Refused(f"{what} must be a string")
        if "\0" in raw:
            raise Refused(f"{what} contains a NUL character")
        path = raw.replace("\\", "/")
        if path.startswith("/") or os.path.isabs(raw) or (len(path) > 1 and path[1] == ":"):
            raise Refused(f"{what} {raw!r} is absolute; give a path relative to the root")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise Refused(f"{what} {raw!r} contains '..'; paths stay inside the root")
        return "/".join(parts) or "."

    def file(self, raw: object) -> tuple[str, str]:
        """(relative path, path to open) of a readable file, or Refused saying why not."""
        rel = self.relative(raw)
        found = self.files().get(rel)
        if found is None:
            kind = "a folder" if self.is_dir(rel) else "not a file tools may read"
            raise Refused(
                f"{rel!r} is {kind} (missing, ignored, a secret file, or outside the root); "
                "use list_dir to see what there is"
            )
        return rel, found

    def is_dir(self, rel: str) -> bool:
        """Whether `rel` is the root or a folder that holds readable files."""
        self.files()
        return rel == "." or rel in self._dirs

    def under(self, rel: str) -> list[str]:
        """The readable files below a folder (all of them for the root), sorted."""
        files = self.files()
        if rel == ".":
            return sorted(files)
        prefix = rel + "/"
        return sorted(name for name in files if name.startswith(prefix))

    def entry(self, raw: object, *, what: str) -> str:
        """A relative path that is a readable file or folder (a `format: path` argument)."""
        rel = self.relative(raw, what=what)
        if rel in self.files() or self.is_dir(rel):
            return rel
        raise Refused(
            f"{what} {rel!r} is not a file or folder tools may use (missing, ignored, a secret "
            "file, or outside the root)"
        )
