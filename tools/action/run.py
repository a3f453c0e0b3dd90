"""The GitHub Action's run step (action.yml): its inputs as one parallelize command, run once.

Composite actions get no INPUT_* variables of their own; action.yml passes each input in one.
- `paths` (one per line) go through --files-from, so a name with spaces or a leading dash stays a
  path, never an option, and a file the pull request deleted is skipped;
- `args` are split like a shell would (quotes kept) but nothing is expanded or run;
- `sarif-file` adds `--format sarif -o FILE` (so `args` may not name --format or --output), and
  is an output only when this run wrote the file (a partial review writes none);
- what parallelize prints on stdout is kept in a file (the `result-file` output) and shown in the
  log between `::stop-commands::` markers: a model's text cannot issue workflow commands there;
- `exit-code`, `result-file` and `sarif-file` go to $GITHUB_OUTPUT, and the step exits with
  parallelize's exit code.

Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path


def command_line(env: dict[str, str], temp: Path) -> list[str]:
    """The parallelize arguments the inputs stand for."""
    argv = [env.get("INPUT_COMMAND", "").strip() or "section"]
    recipe = env.get("INPUT_RECIPE", "").strip()
    if recipe:
        argv += ["--recipe", recipe]
    paths = [line.strip() for line in env.get("INPUT_PATHS", "").splitlines() if line.strip()]
    if paths:
        listed = temp / "parallelize-paths.txt"
        listed.write_text("".join(f"{path}\n" for path in paths), encoding="utf-8")
        argv += ["--files-from", str(listed)]
    sarif = env.get("INPUT_SARIF_FILE", "").strip()
    args = shlex.split(env.get("INPUT_ARGS", ""))
    if sarif:
        if (clash := output_option(args)) is not None:
            raise ArgsError(
                f"{clash} cannot be combined with sarif-file, which sets --format sarif "
                "--output FILE (drop it from args, or drop sarif-file)"
            )
        argv += ["--format", "sarif", "--output", sarif]
    return argv + args


class ArgsError(Exception):
    """`args` that contradict the other inputs."""


def output_option(args: list[str]) -> str | None:
    """The first --format, -o or --output in `args` (in any spelling Click accepts), if any."""
    for arg in args:
        if arg == "--":  # what follows is paths
            return None
        name = arg.split("=", 1)[0]
        if name in ("--format", "--output") or arg.startswith("-o"):
            return name if name.startswith("--") else "-o"
    return None


def written(path: Path) -> tuple[int, int, int] | None:
    """What identifies one version of a file (None: there is none), to tell whether this run
    wrote it: a SARIF file left by an earlier run must not be uploaded as this run's."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def show(result: Path) -> None:
    """The result in the log, with workflow commands stopped around it."""
    text = result.read_text(encoding="utf-8", errors="replace")
    if not text:
        return
    token = secrets.token_hex(16)
    end = "" if text.endswith("\n") else "\n"
    sys.stdout.write(f"::stop-commands::{token}\n{text}{end}::{token}::\n")
    sys.stdout.flush()


def main() -> int:
    env = dict(os.environ)
    temp = Path(env.get("RUNNER_TEMP") or ".")
    try:
        argv = command_line(env, temp)
    except ValueError as exc:  # shlex: an unclosed quote
        print(f"::error title=parallelize::args: cannot split ({exc})", file=sys.stderr)
        return 2
    except ArgsError as exc:
        print(f"::error title=parallelize::args: {exc}", file=sys.stderr)
        return 2
    sarif = env.get("INPUT_SARIF_FILE", "").strip()
    before = written(Path(sarif)) if sarif else None
    result = temp / "parallelize-result.txt"
    with result.open("wb") as stdout:
        code = subprocess.call([sys.executable, "-m", "parallelize", *argv], stdout=stdout)
    show(result)
    outputs = {"exit-code": str(code), "result-file": str(result)}
    # Only a SARIF file this run wrote: none is written when a chunk was not reviewed.
    fresh = bool(sarif) and Path(sarif).is_file() and written(Path(sarif)) != before
    outputs["sarif-file"] = sarif if fresh else ""
    if env.get("GITHUB_OUTPUT"):
        with open(env["GITHUB_OUTPUT"], "a", encoding="utf-8") as handle:
            handle.writelines(f"{name}={value}\n" for name, value in outputs.items())
    return code


if __name__ == "__main__":
    sys.exit(main())
