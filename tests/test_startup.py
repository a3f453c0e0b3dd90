"""Start-up stays light: `--help` and `--version` import none of the heavy modules."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("httpx", "pydantic", "tiktoken", "openai", "rich", "sqlite3", "platformdirs")
PROBE = """
import sys
sys.argv = ["parallelize", *sys.argv[1:]]
from parallelize.cli import main
try:
    main()
except SystemExit:
    pass
print(",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout  # the help or version text was printed ...
    assert run.stderr.strip().splitlines()[-1:] in ([], [""])  # ... and nothing heavy loaded
