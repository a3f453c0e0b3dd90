"""Fan-out to files: one output per section under an output directory, confined and atomic.

Target paths come from a template and are checked when the plan is built (absolute paths, `..`,
symlinks that escape, and two sections sharing a path are refused before any request). Each file
is written to a temporary name in its own directory and renamed into place, so a file either
exists complete or not at all, even if the run is killed. `manifest.json` records every clone,
every file written and every failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
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
        if key in seen:
            raise ConfigError(
                f"--out-dir: {seen[key].label} and {task.label} would both write '{rel}'",
                hint="make merge.path distinct per section with {{ clone }}, {{ aspect }} "
                "or {{ chunk_id }}",
            )
        seen[key] = task
        confine(root, rel, create=False)
        planned.append(replace(task, source=replace(_section(task), out_path=rel)))
    return planned


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

    Every file the tool writes goes through here, so every one is masked (masking.py)."""
    text = mask(text)
    fd, temp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class OutputWriter:
    """Writes each finished section to its target as soon as it is final, from any thread."""

    def __init__(self, out_dir: Path) -> None:
        self.shown = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.root = out_dir.resolve()
        self.written: dict[int, dict[str, Any]] = {}
        self.errors: dict[int, str] = {}
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        """Executor callback: write a free-text section the moment its call succeeds."""
        result = event.result
        if event.kind == "done" and result is not None and not _section(result.task).json:
            self.write(result)

    def write(self, result: TaskResult, *, text: str | None = None) -> bool:
        """Write one section's output (unless written already); False when it cannot be."""
        task = result.task
        rel = _section(task).out_path
        with self._lock:
            if rel is None or task.index in self.written:
                return task.index in self.written
        if result.status != "ok":
            return False  # a failed or truncated answer never leaves a partial file
        body = result.text if text is None else text
        body = body if body.endswith("\n") else body + "\n"
        try:
            write_atomic(confine(self.root, rel, create=True), body)
        except (OSError, ConfigError) as exc:
            with self._lock:
                self.errors[task.index] = str(exc)
            return False
        data = body.encode("utf-8")
        record = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        with self._lock:
            self.written[task.index] = record
            self.errors.pop(task.index, None)
        return True

    def display(self, rel: str) -> str:
        """The path of an output as the user named the directory."""
        return os.path.join(self.shown, rel)

    def write_manifest(self, results: Sequence[TaskResult], *, recipe: str, model: str) -> Path:
        """manifest.json: every clone with its status, every file and every failure."""
        files, failures = [], []
        clones: dict[str, dict[str, Any]] = {}
        for result in results:
            section = _section(result.task)
            origin = {
                "clone": section.clone,
                "matrix": dict(section.matrix or {}),
                **({"aspect": section.aspect} if section.aspect is not None else {}),
                "chunk_id": section.chunk_id,
                "inputs": section.paths,
                "label": result.task.label,
            }
            clone = clones.setdefault(
                origin["clone"],
                {"clone": origin["clone"], "matrix": origin["matrix"], "files": 0, "failed": 0},
            )
            if result.task.index in self.written:
                files.append(
                    {"path": section.out_path, **origin, **self.written[result.task.index]}
                )
                clone["files"] += 1
            else:
                error = self.errors.get(result.task.index) or result.error or _why_not(result)
                failures.append(
                    {
                        "path": section.out_path,
                        **origin,
                        "status": result.status,
                        "error": error,
                    }
                )
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
