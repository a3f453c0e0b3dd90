"""Master-clone over files split into several chunks, and the mode of every written file.

A file too long for one request is split; its parts map to the same output path, and are
written into that one file, in order. Written files get the mode `open(path, "w")` would give
them (0666 less the umask), while the call cache stays private to its owner.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from llmserver import LLMServer, last_user_text
from typer.testing import CliRunner

from parallelize.cli.app import app

#: A window that takes about 150 tokens of input: docs/long.md is split into parts.
SMALL = ("--context-window", "300", "--max-tokens", "64")
BODY = re.compile(r"<file [^>]*>\n(.*)</file>", re.DOTALL)


def translated(body: dict) -> str:
    """The loopback 'translation': the framed part, upper-cased, tagged with its locale."""
    text = last_user_text(body)
    locale = "fr" if "locale fr-FR" in text else "de"
    return "".join(f"[{locale}] {line.upper()}\n" for line in BODY.search(text)[1].splitlines())


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docs/long.md (split into parts in SMALL) and docs/short.md, run from tmp."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text("".join(f"Line {i:02d} of the long guide.\n" for i in range(40)))
    (docs / "short.md").write_text("Hello there.\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def translate(*args: str):
    command = ["section", "docs", "--recipe", "translate", "-m", "test-model", "-q"]
    return CliRunner().invoke(app, [*command, *SMALL, *args])


def test_the_parts_of_a_split_file_are_written_into_one_file(llm: LLMServer, tree: Path) -> None:
    llm.script(None, translated)
    result = translate("--each", "locale=fr-FR,de-DE", "--out-dir", "i18n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "i18n/fr-FR/docs/long.md",
        "i18n/fr-FR/docs/short.md",
        "i18n/de-DE/docs/long.md",
        "i18n/de-DE/docs/short.md",
    ]
    source = (tree / "docs/long.md").read_text().splitlines()
    for locale in ("fr", "de"):
        written = (tree / f"i18n/{locale}-{locale.upper()}/docs/long.md").read_text()
        assert written.splitlines() == [f"[{locale}] {line.upper()}" for line in source]
    manifest = json.loads((tree / "i18n/manifest.json").read_text())
    assert manifest["failures"] == []
    assert [c["files"] for c in manifest["clones"]] == [2, 2]
    (entry,) = [f for f in manifest["files"] if f["path"] == "fr-FR/docs/long.md"]
    labels = [part["label"] for part in entry["parts"]]
    parts = len(labels)
    assert parts > 2 and labels[0].startswith("chunk 1/") and labels[0].endswith("[fr-FR]")
    assert entry["bytes"] == len((tree / "i18n/fr-FR/docs/long.md").read_bytes())
    assert "parts" not in next(f for f in manifest["files"] if f["path"] == "fr-FR/docs/short.md")


def test_a_failed_part_writes_no_file_of_that_input(llm: LLMServer, tree: Path) -> None:
    llm.script(lambda body: "locale de-DE" in str(body) and "Line 17" in str(body), status=500)
    llm.script(None, translated)
    result = translate("--each", "locale=fr-FR,de-DE", "--out-dir", "i18n", "--max-retries", "0")
    assert result.exit_code == 1
    assert (tree / "i18n/fr-FR/docs/long.md").exists()
    assert (tree / "i18n/de-DE/docs/short.md").exists()
    assert not (tree / "i18n/de-DE/docs/long.md").exists()  # never a file with a hole
    manifest = json.loads((tree / "i18n/manifest.json").read_text())
    (failure,) = manifest["failures"]
    assert failure["path"] == "de-DE/docs/long.md" and failure["status"] == "failed"
    assert failure["error"].startswith("chunk ") and "[de-DE]: HTTP 500" in failure["error"]
    assert {c["clone"]: c["status"] for c in manifest["clones"]} == {
        "fr-FR": "ok",
        "de-DE": "partial",
    }


def test_two_inputs_mapping_to_one_path_stay_an_error(llm: LLMServer, tree: Path) -> None:
    recipe = tree / "r.yaml"
    recipe.write_text(
        "model: test-model\nprompt: 'Say {{ input }}'\nchunking: {by: file}\n"
        "merge: {strategy: files, path: 'all.md'}\n"
    )
    args = ["section", "docs", "--recipe", str(recipe), "--out-dir", "out", *SMALL]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "would both write 'all.md'" in result.stderr
    assert "long.md" in result.stderr or "chunk" in result.stderr
    assert llm.all_requests == []


def test_overlap_cannot_join_parts(llm: LLMServer, tree: Path) -> None:
    result = translate("--each", "locale=fr-FR", "--out-dir", "i18n", "--overlap", "2")
    assert result.exit_code == 2
    assert "--overlap 2 would repeat lines" in result.stderr
    assert llm.all_requests == []


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask_and_the_cache_stays_private(
    llm: LLMServer, tree: Path, umask_022: None
) -> None:
    llm.script(None, translated)
    cache = tree / "cache"
    result = translate("--each", "locale=fr-FR", "--out-dir", "i18n", "--cache-dir", str(cache))
    assert result.exit_code == 0, result.stderr
    for name in ("i18n/fr-FR/docs/long.md", "i18n/fr-FR/docs/short.md", "i18n/manifest.json"):
        assert mode(tree / name) == 0o644, name
    args = ["section", "docs/short.md", "-p", "Say", "-m", "test-model", "-o", "out.md", "-q"]
    result = CliRunner().invoke(app, [*args, "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.stderr
    assert mode(tree / "out.md") == 0o644
    assert mode(cache) == 0o700
    stored = [p for p in cache.iterdir() if p.is_file()]
    assert stored and all(mode(p) == 0o600 for p in stored), [
        (p.name, oct(mode(p))) for p in stored
    ]
