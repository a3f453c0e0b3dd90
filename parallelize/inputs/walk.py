"""Which files a PATH stands for: a sorted walk that honours .gitignore and the filters.

Directories are walked with `os.scandir`, pruning VCS folders, tool caches, `--exclude`d and
git-ignored folders before descending. `.gitignore` files apply at every level (the deepest one
with a matching pattern decides, as in git), then `.git/info/exclude`; the gitignore semantics
come from `pathspec`. Symlinked folders are never followed, so a symlink cycle cannot loop, and a
file symlink is read only when its target stays inside the root (see `bounds`).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, TextIO

from .bounds import Fence, within
from .frames import display_name

STDIN = "-"
STDIN_NAME = "<stdin>"

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS"})
#: Tool state and dependency folders (shell globs on the folder name): never input.
TOOL_DIRS = (
    "__pycache__",
    "node_modules",
    ".venv",
    ".tox",
    ".nox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".eggs",
    "*.egg-info",
)
#: Files that hold secrets (shell globs on the file name); --allow-secrets sends them.
SECRET_FILES = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.kdbx",
    "*.keychain",
    "*.keychain-db",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".git-credentials",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".*_history",  # shell, python, psql, mysql, redis: commands typed with passwords in them
    ".htpasswd",
    "credentials",
    "credentials.json",
    "client_secret*.json",
    "*.tfstate",
    "*.tfstate.backup",
)
#: Files that hold secrets where the name alone is too common (the end of the path matches).
SECRET_PATHS = (".kube/config", ".docker/config.json", ".config/gh/hosts.yml")
#: ...except these, which are templates or public halves by convention.
NOT_SECRET_FILES = (".env.example", ".env.sample", ".env.template", ".env.dist", "*.pub")

Skip = Callable[[str, str], None]


class Source(NamedTuple):
    """A candidate input: the name the model sees, where to read it, and stdin's text."""

    display: str
    path: str
    #: Known to be a regular file already (from the walk), so no extra stat is needed.
    regular: bool = False
    text: str | None = None


def _globs(patterns: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


_TOOL_DIR = _globs(TOOL_DIRS)
_SECRET_FILE = _globs(SECRET_FILES)
_NOT_SECRET_FILE = _globs(NOT_SECRET_FILES)


def is_secret_file(name: str) -> bool:
    """Whether a file name is one that holds secrets by convention (.env, *.pem, id_rsa, ...)."""
    return bool(_SECRET_FILE.match(name)) and not _NOT_SECRET_FILE.match(name)


def is_secret_path(path: str) -> bool:
    """Whether a path ends in a known credential file (~/.kube/config, ~/.docker/config.json)."""
    shown = "/" + path.replace(os.sep, "/").lstrip("/")
    return any(shown.endswith("/" + tail) for tail in SECRET_PATHS)


class PathRules:
    """Path filters: --include/--exclude (gitignore syntax), tool folders and secret files."""

    def __init__(
        self, *, include: Sequence[str] = (), exclude: Sequence[str] = (), secret_files: bool = True
    ) -> None:
        self.include = _gitignore_spec(include)
        self.exclude = _gitignore_spec(exclude)
        self.secret_files = secret_files

    def file_reason(self, display: str, rel: str = "", target: str = "") -> str | None:
        """Why a file is left out by the path filters, or None to read it.

        Globs match the path relative to the walked PATH or the path as shown (relative to the
        working directory); `target` is the file a symlink points to.
        """
        keys = _keys(display, rel)
        if self.exclude is not None and any(self.exclude.match_file(k) for k in keys):
            return "excluded"
        if self.include is not None and not any(self.include.match_file(k) for k in keys):
            return "excluded"
        names = (display.rsplit("/", 1)[-1], os.path.basename(target))
        if self.secret_files and any(is_secret_file(n) for n in names if n):
            return "secret-file"
        if self.secret_files and any(is_secret_path(p) for p in (*keys, target) if p):
            return "secret-file"
        return None

    def dir_excluded(self, display: str, rel: str, name: str) -> bool:
        """Tool folders, and folders an --exclude pattern matches."""
        if _TOOL_DIR.match(name):
            return True
        keys = [k + "/" for k in _keys(display, rel)]
        return self.exclude is not None and any(self.exclude.match_file(k) for k in keys)


def _keys(display: str, rel: str) -> list[str]:
    shown = display.lstrip("/")
    return [shown, rel] if rel and rel != shown else [shown]


Ignores = tuple[tuple[str, Any], ...]


def iter_sources(
    paths: Sequence[str],
    files_from: Sequence[str],
    rules: PathRules,
    skip: Skip,
    stdin: TextIO | None,
    fence: Fence | None = None,
) -> Iterator[Source]:
    """Every candidate file in order, once: PATHs as given, then the --files-from list.

    `files_from` entries that no longer exist are skipped as "missing" (a deleted file in a diff);
    those that resolve outside the working directory through a symlink as "symlink-outside".
    """
    fence = fence or Fence()
    seen: set[str] = set()
    listed = [(raw, False) for raw in paths] + [(raw, True) for raw in files_from]
    for raw, from_list in listed:
        if raw == STDIN and not from_list:
            yield Source(STDIN_NAME, STDIN, text=(stdin or sys.stdin).read())
            continue
        if from_list and not os.path.lexists(raw):
            skip("missing", _display(raw))
            continue
        if from_list and fence.listed_escapes(raw):
            skip("symlink-outside", _display(os.path.normpath(raw)))
            continue
        fence.check_named(raw)
        root = os.path.normpath(raw)
        if os.path.isdir(root):
            sources = _walk(root, rules, skip, fence)
        else:
            display = _display(root)
            target = os.path.realpath(root) if os.path.islink(root) else ""
            reason = rules.file_reason(display, target=target)
            if reason:
                skip(reason, display)
                continue
            sources = [Source(display, root)]
        for source in sources:
            key = os.path.abspath(source.path)
            if key not in seen:
                seen.add(key)
                yield source


def _display(path: str) -> str:
    """The name the model sees for a path: `/` separators, valid one-line text."""
    return display_name(path.replace(os.sep, "/"))


def _walk(root: str, rules: PathRules, skip: Skip, fence: Fence) -> list[Source]:
    """Files under a directory that survive the filters, sorted by their relative path."""
    base = os.path.abspath(root)
    real_root = os.path.realpath(base)
    files: list[tuple[str, Source]] = []
    stack: list[tuple[str, str, Ignores]] = [(base, "", _outer_ignores(base))]
    while stack:
        directory, rel, ignores = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            skip("unreadable", _shown(root, rel))
            continue
        ignores = _with_gitignore(ignores, directory, entries)
        for entry in entries:
            entry_rel = rel + entry.name
            shown = _shown(root, entry_rel)
            link = is_dir = False
            try:
                link = entry.is_symlink()
                is_dir = not link and entry.is_dir(follow_symlinks=False)
                reason = _symlink_reason(entry.path, real_root, fence) if link else None
                if not (link or is_dir or entry.is_file(follow_symlinks=False)):
                    reason = "special"
            except OSError:
                reason = "unreadable"
            if reason is None and fence.reserved_entry(entry):
                reason = "output"
            if reason is None and entry.name in VCS_DIRS:
                reason = "vcs"
            if reason is None and _ignored(ignores, entry.path, is_dir):
                reason = "ignored"
            if reason is None and is_dir:
                if not rules.dir_excluded(shown, entry_rel, entry.name):
                    stack.append((entry.path, entry_rel + "/", ignores))
                    continue
                reason = "excluded"
            if reason is None:
                target = os.path.realpath(entry.path) if link else ""
                reason = rules.file_reason(shown, entry_rel, target)
            if reason is not None:
                skip(reason, shown + ("/" if is_dir else ""))
                continue
            path = os.path.join(root, entry_rel) if root != os.curdir else entry_rel
            files.append((entry_rel, Source(shown, path, regular=not link)))
    files.sort()
    return [source for _, source in files]


def _shown(root: str, rel: str) -> str:
    """The name the model sees: the path as given, joined with the relative part."""
    if not rel:
        return _display(root)
    return _display(rel if root == os.curdir else os.path.join(root, rel))


def _symlink_reason(path: str, real_root: str, fence: Fence) -> str | None:
    """Why a symlink is skipped: broken (or a loop), a folder (never followed: no cycles), its
    target outside the walked root, or a path this run writes."""
    try:
        target = os.stat(path)
    except OSError:
        return "broken-symlink"
    if stat.S_ISDIR(target.st_mode):
        return "symlinked-dir"
    if not within(os.path.realpath(path), real_root):
        return "symlink-outside"
    if fence.reserved_stat(path) is not None:
        return "output"
    return None if stat.S_ISREG(target.st_mode) else "special"


def _outer_ignores(base: str) -> Ignores:
    """Ignore rules from above the walked folder: .git/info/exclude and parent .gitignore files."""
    top = _repo_top(base)
    if top is None:
        return ()
    layers: list[tuple[str, Any]] = []
    exclude = _git_dir_file(top, "info/exclude")
    if exclude and (spec := _load_spec(exclude)) is not None:
        layers.append((top, spec))
    current = top
    for part in os.path.relpath(base, top).split(os.sep) if base != top else []:
        spec = _load_spec(os.path.join(current, ".gitignore"))
        if spec is not None:
            layers.append((current, spec))
        current = os.path.join(current, part)
        if _ignored(tuple(layers), current, True):
            return ()  # PATH is inside an ignored folder: asked for explicitly, so walk all of it
    return tuple(layers)


def _repo_top(base: str) -> str | None:
    current = base
    while True:
        if os.path.lexists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _git_dir_file(top: str, name: str) -> str | None:
    """A file inside the git dir, also for worktrees and submodules (`.git` is a file there)."""
    dotgit = os.path.join(top, ".git")
    if os.path.isdir(dotgit):
        return os.path.join(dotgit, name)
    try:
        with open(dotgit, encoding="utf-8") as handle:
            line = handle.readline().strip()
    except OSError:
        return None
    if not line.startswith("gitdir:"):
        return None
    gitdir = os.path.join(top, line.removeprefix("gitdir:").strip())
    try:
        with open(os.path.join(gitdir, "commondir"), encoding="utf-8") as handle:
            gitdir = os.path.join(gitdir, handle.read().strip())
    except OSError:
        pass
    return os.path.join(gitdir, name)


def _with_gitignore(ignores: Ignores, directory: str, entries: list[os.DirEntry[str]]) -> Ignores:
    if not any(e.name == ".gitignore" for e in entries):
        return ignores
    spec = _load_spec(os.path.join(directory, ".gitignore"))
    return (*ignores, (directory, spec)) if spec is not None else ignores


def _load_spec(path: str) -> Any:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return _gitignore_spec(handle.read().splitlines())
    except OSError:
        return None


def _gitignore_spec(lines: Sequence[str]) -> Any:
    """Patterns with git's matching rules; None for none (pathspec is loaded only when needed)."""
    if not lines:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(ignores: Ignores, path: str, is_dir: bool) -> bool:
    """Git's rule: the deepest .gitignore with a matching pattern decides, last match wins."""
    for base, spec in reversed(ignores):
        rel = path[len(base) + 1 :].replace(os.sep, "/") + ("/" if is_dir else "")
        verdict = spec.check_file(rel).include
        if verdict is not None:
            return bool(verdict)
    return False
