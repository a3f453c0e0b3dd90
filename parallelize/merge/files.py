"""Fan-out to files: one output per section under an output directory, confined and atomic.

Target paths come from a template and are checked when the plan is built (absolute paths, `..`,
symlinks that escape, and two sections sharing a path are refused before any request). The parts
of ONE input file that was split into several chunks may share a path: they are written into
that one file, in order, once every part is done. Each file is written to a temporary name in
its own directory and renamed into place, so a file either exists complete or not at all, even
if the run is killed, with the mode `open(path, "w")` would give it (0666 less the umask).
`manifest.json` records every clone, every file written (with its parts) and every failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, RecipeError
from ..masking import mask
from ..plan.template import check_template, placeholders, render
from ..recipe.model import Recipe
from ..records import SectionSource, Task, TaskResult

if TYPE_CHECKING:
    from ..records import Event

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
#: Temporary files are hidden and named so that nobody mistakes one for an output.
TEMP_PREFIX = ".parallelize-"
TEMP_SUFFIX = ".tmp"
SEPARATORS = ("/", "\\")
#: What open(path, "w") asks for; the kernel takes the umask off, as for any other file.
FILE_MODE = 0o666
#: Temporary names tried before giving up (each is random: a clash means someone is racing).
TEMP_ATTEMPTS = 100


def default_path_template(recipe: Recipe) -> str:
    """`{{ clone }}/{{ chunk_id }}.md`, with `{{ aspect }}/` when there are aspects."""
    parts = ["{{ clone }}"] if recipe.matrix else []
    parts += ["{{ aspect }}"] if recipe.aspects else []
    return "/".join([*parts, "{{ chunk_id }}.md"])


def path_variables(recipe: Recipe) -> set[str]:
    """Placeholders an output path template may use."""
    allowed = {"chunk_id"}
    if recipe.matrix:
        allowed |= {"clone", *recipe.matrix}
    if recipe.aspects:
        allowed.add("aspect")
    if recipe.chunking.by == "file":
        allowed.add("path")
    return allowed


def plan_outputs(recipe: Recipe, tasks: Sequence[Task], *, out_dir: Path) -> list[Task]:
    """The tasks with their target path (`out_path`); ConfigError on any unsafe or shared
    path, before any request is made."""
    template = recipe.merge.path or default_path_template(recipe)
    if "path" in placeholders(template) and recipe.chunking.by != "file":
        raise RecipeError(
            "merge.path: {{ path }} is only available with --by file (one input file per section)",
            hint="use --by file, or {{ chunk_id }} instead",
        )
    check_template(template, path_variables(recipe), where="merge.path")
    if _is_absolute(template):
        raise RecipeError(f"merge.path: '{template}' is absolute; give a path inside --out-dir")
    root = out_dir.resolve()
    seen: dict[str, Task] = {}
    planned = []
    for task in tasks:
        values = _path_values(task)
        if "path" in placeholders(template) and "path" not in values:
            raise RecipeError(
                f"merge.path: {{{{ path }}}} needs one input file per section, but {task.label} "
                "has none",
                hint="pass the files to translate as PATH",
            )
        rel = target_path(template, values)
        key = rel.casefold()  # two names that differ only in case collide on macOS and Windows
        if key in seen and _parts_of_one_file(seen[key], task):
            if recipe.chunking.overlap:
                raise ConfigError(
                    f"--out-dir: {seen[key].label} and {task.label} are parts of one file, "
                    f"joined into '{rel}', and --overlap {recipe.chunking.overlap} would repeat "
                    "lines at every join",
                    hint="drop --overlap (or chunking.overlap) when parts are joined into files",
                )
        elif key in seen:
            raise ConfigError(
                f"--out-dir: {seen[key].label} and {task.label} would both write '{rel}'",
                hint="make merge.path distinct per section with {{ clone }}, {{ aspect }} "
                "or {{ chunk_id }}",
            )
        seen[key] = task
        confine(root, rel, create=False)
        planned.append(replace(task, source=replace(_section(task), out_path=rel)))
    return planned


def _parts_of_one_file(first: Task, other: Task) -> bool:
    """Whether two sections are pieces of the same single input file (same clone and aspect):
    their answers join into one output, where two different inputs would overwrite."""
    a, b = _section(first), _section(other)
    return len(a.paths) == 1 and a.paths == b.paths and (a.clone, a.aspect) == (b.clone, b.aspect)


def target_path(template: str, values: Mapping[str, str]) -> str:
    """Render a path template one segment at a time; refuse absolute paths and `..`."""
    pieces: list[str] = []
    for segment in template.split("/"):
        rendered = render(segment, values, append_input=False)
        if _is_absolute(rendered) and segment.strip():
            raise ConfigError(
                f"output path '{rendered}' is absolute (from merge.path '{template}')"
            )
        for piece in rendered.replace("\\", "/").split("/"):
            if piece == "..":
                raise ConfigError(f"output path '{rendered}' leaves --out-dir (it contains '..')")
            if piece not in ("", "."):
                pieces.append(piece)
    rel = "/".join(pieces)
    if not pieces or template.endswith("/"):
        raise ConfigError(f"merge.path '{template}' gives no file name for one of the sections")
    if rel == MANIFEST or pieces[-1].startswith(TEMP_PREFIX):
        raise ConfigError(f"output path '{rel}' is reserved; choose another merge.path")
    return rel


def confine(root: Path, rel: str, *, create: bool) -> Path:
    """The absolute target for `rel` under `root`; refuses a symlink that leads outside.

    With `create`, missing directories are made one level at a time, so no existing link is
    followed without being checked first.
    """
    current = root
    *dirs, name = PurePosixPath(rel).parts
    for part in dirs:
        step = current / part
        if step.is_symlink() or step.exists():
            resolved = step.resolve()
            if not resolved.is_relative_to(root):
                raise ConfigError(f"output path '{rel}' is refused: {step} leads outside {root}")
            if not resolved.is_dir():
                raise ConfigError(f"output path '{rel}' is refused: {step} is not a directory")
            current = resolved
        elif create:
            step.mkdir(exist_ok=True)
            current = step
        else:
            current = step
    target = current / name
    if target.is_symlink() and not target.resolve().is_relative_to(root):
        raise ConfigError(f"output path '{rel}' is refused: {target} is a link outside {root}")
    if target.is_dir():
        raise ConfigError(f"output path '{rel}' is refused: {target} is a directory")
    return target


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that it exists complete or not at all: temp file, fsync, rename.

    Every file the tool writes goes through here, so every one is masked (masking.py). The temp
    file is made with FILE_MODE (not mkstemp's 0600), so the result is as readable as any file
    the user's umask allows."""
    text = mask(text)
    fd, temp = _create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden file beside `path`, opened for writing (exclusive: never an existing file
    or a planted link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(TEMP_ATTEMPTS):
        name = f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        temp = path.parent / name
        try:
            return os.open(temp, flags, FILE_MODE), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


class OutputWriter:
    """Writes each finished section to its target as soon as it is final, from any thread.

    A file made of several parts (one input split into chunks) is written once its last part is
    done; the parts are known from the executor's "queued" events, or from `expect`."""

    def __init__(self, out_dir: Path) -> None:
        self.shown = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.root = out_dir.resolve()
        #: The record of the file each written section went into (every part has its file's).
        self.written: dict[int, dict[str, Any]] = {}
        self.errors: dict[int, str] = {}
        self._parts: dict[str, list[int]] = {}
        self._ready: dict[int, tuple[TaskResult, str | None]] = {}
        self._lock = threading.Lock()

    def expect(self, tasks: Sequence[Task]) -> None:
        """Learn which sections write which file (a file waits for all of its parts)."""
        with self._lock:
            for task in tasks:
                rel = task.section.out_path if task.section else None
                if rel is not None and task.index not in self._parts.setdefault(rel, []):
                    self._parts[rel].append(task.index)

    def on_event(self, event: Event) -> None:
        """Executor callback: learn the planned sections, and write a free-text file the moment
        its (last) call succeeds."""
        result = event.result
        if event.kind == "queued":
            self.expect([event.task])
        elif event.kind == "done" and result is not None and not _section(result.task).json:
            self.write(result)

    def write(self, result: TaskResult, *, text: str | None = None) -> bool:
        """Write one section's output (unless written already); False when it is not written
        (yet: a part waits for the other parts of its file)."""
        task = result.task
        rel = _section(task).out_path
        if rel is None:
            return False
        self.expect([task])
        with self._lock:
            if task.index in self.written:
                return True
            self._ready[task.index] = (result, text)
            parts = self._parts[rel]
            if any(index not in self._ready for index in parts):
                return False
            group = [self._ready[index] for index in parts]
        return self._write_file(rel, group)

    def _write_file(self, rel: str, group: list[tuple[TaskResult, str | None]]) -> bool:
        """The parts' answers, in order, as one file: only when every part is whole."""
        if any(result.status != "ok" for result, _ in group):
            return False  # a failed or truncated answer never leaves a partial file
        body = "".join(_ended(result.text if text is None else text) for result, text in group)
        indices = [result.task.index for result, _ in group]
        try:
            write_atomic(confine(self.root, rel, create=True), body)
        except (OSError, ConfigError) as exc:
            with self._lock:
                self.errors.update(dict.fromkeys(indices, str(exc)))
            return False
        data = body.encode("utf-8", "surrogateescape")
        record = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        with self._lock:
            for index in indices:
                self.written[index] = record
                self.errors.pop(index, None)
        return True

    def display(self, rel: str) -> str:
        """The path of an output as the user named the directory."""
        return os.path.join(self.shown, rel)

    def write_manifest(self, results: Sequence[TaskResult], *, recipe: str, model: str) -> Path:
        """manifest.json: every clone with its status, every file (once, with its parts when it
        has several) and every failure."""
        files, failures = [], []
        clones: dict[str, dict[str, Any]] = {}
        for members in by_file(results).values():
            first = members[0]
            section = _section(first.task)
            origin = {
                "clone": section.clone,
                "matrix": dict(section.matrix or {}),
                **({"aspect": section.aspect} if section.aspect is not None else {}),
                "chunk_id": section.chunk_id,
                "inputs": section.paths,
                "label": first.task.label,
            }
            if len(members) > 1:
                origin["parts"] = [_part(result) for result in members]
            clone = clones.setdefault(
                origin["clone"],
                {"clone": origin["clone"], "matrix": origin["matrix"], "files": 0, "failed": 0},
            )
            if first.task.index in self.written:
                record = self.written[first.task.index]
                files.append({"path": section.out_path, **origin, **record})
                clone["files"] += 1
                continue
            worst = next((r for r in members if r.status != "ok"), first)
            error = self.errors.get(worst.task.index) or worst.error or _why_not(worst)
            if len(members) > 1 and worst.status != "ok":
                error = f"{worst.task.label}: {error}"
            failure = {"path": section.out_path, **origin, "status": worst.status, "error": error}
            failures.append(failure)
            clone["failed"] += 1
        for clone in clones.values():
            clone["status"] = (
                "ok" if not clone["failed"] else "failed" if not clone["files"] else "partial"
            )
        manifest = {
            "schema_version": MANIFEST_VERSION,
            "recipe": recipe,
            "model": model,
            "clones": list(clones.values()),
            "files": files,
            "failures": failures,
        }
        path = self.root / MANIFEST
        write_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        return path


def by_file(results: Sequence[TaskResult]) -> dict[str | int, list[TaskResult]]:
    """Results per output file, in order (a file's parts in chunk order); a section with no
    output path stands alone, under its task index."""
    files: dict[str | int, list[TaskResult]] = {}
    for result in results:
        rel = _section(result.task).out_path
        files.setdefault(result.task.index if rel is None else rel, []).append(result)
    return files


def _part(result: TaskResult) -> dict[str, Any]:
    section = _section(result.task)
    return {"chunk_id": section.chunk_id, "label": result.task.label, "status": result.status}


def _ended(text: str) -> str:
    """A part's text ending with a newline (an empty text stays empty)."""
    return text if not text or text.endswith("\n") else text + "\n"


def _why_not(result: TaskResult) -> str:
    if result.status == "truncated":
        reason = result.completion.finish_reason if result.completion else None
        return f"the answer was cut short ({reason or 'empty reply'}); no file written"
    return "not written"


def _path_values(task: Task) -> dict[str, str]:
    section = _section(task)
    values = {"chunk_id": section.chunk_id, "clone": section.clone}
    values |= {k: str(v) for k, v in (section.matrix or {}).items()}
    if section.aspect is not None:
        values["aspect"] = section.aspect
    paths = section.paths
    if len(paths) == 1:
        values["path"] = _relative_input(paths[0])
    return values


def _relative_input(path: str) -> str:
    """An input path usable inside --out-dir: relative to the working directory when under it."""
    if not _is_absolute(path):
        return path
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        raise ConfigError(
            f"{{{{ path }}}} cannot place input '{path}' inside --out-dir: it is outside the "
            "working directory",
            hint="run from a directory that contains the input, or use {{ chunk_id }}",
        ) from None


def _is_absolute(path: str) -> bool:
    windows = PureWindowsPath(path)
    return path.startswith(SEPARATORS) or bool(windows.drive) or PurePosixPath(path).is_absolute()


def _section(task: Task) -> SectionSource:
    """The section a file-writing task works on (only section tasks write files)."""
    assert task.section is not None, f"{task.label} is not a section task"
    return task.section
