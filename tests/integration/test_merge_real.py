"""Issue 13 items 5-6 on a real llama.cpp server with 4,096-token slots (random weights:
mechanics only): review-aspects prints strict JSON and its repair calls fit the slot, and
translate writes each split file once, its parts joined."""

from __future__ import annotations

import email
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from realcli import run_cli

EMAIL = Path(email.__file__).parent

#: A translate recipe for a model that never stops by itself: a stop string ends each answer
#: (a truncated section writes no file), greedy so that every run answers alike.
TRANSLATE = """\
name: translate-test
prompt: |
  Translate the file below into the language of the locale {{ locale }}.

  {{ input }}
temperature: 0
max_tokens: 48
stop: ["e", "a", "o", "i", "t", "n", "s"]
chunking: {by: file}
matrix:
  locale: [fr-FR]
merge:
  strategy: files
  path: "{{ locale }}/{{ path }}"
"""


def run(srv, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(srv.base_url, tmp_path, "section", *args)


def strict_loads(text: str) -> Any:
    """json.loads that refuses NaN and Infinity, which RFC 8259 has no place for."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_review_aspects_prints_strict_json_and_its_repairs_fit(server_4k, tmp_path) -> None:
    """Chunks fill the slot, and a hot temperature makes some answers run to max_tokens (2,048):
    echoed in full, their repairs overflowed the slot and the run exited 2."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("utils.py", "quoprimime.py"):
        shutil.copy(EMAIL / name, src / name)
    done = run(server_4k, tmp_path, "src", "--recipe", "review-aspects", "-t", "1.5")
    assert done.returncode in (0, 1), done.stderr  # 1: the tiny model's JSON stays invalid
    review = strict_loads(done.stdout)
    assert set(review) == {"security", "performance", "readability"}
    assert all(isinstance(doc, dict) for doc in review.values())
    assert "exceeds the available context" not in done.stderr
    assert "re-run the same command" not in done.stderr
    assert "(repair)" in done.stderr  # repairs were made, and fit


def test_translate_writes_each_split_file_once(server_4k, tmp_path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(EMAIL / "charset.py", docs / "charset.md")  # about 5,000 tokens: 2 parts
    shutil.copy(EMAIL / "encoders.py", docs / "encoders.md")  # one part
    (tmp_path / "translate.yaml").write_text(TRANSLATE)
    args = ["docs", "--recipe", "translate.yaml", "--each", "locale=fr-FR,de-DE"]
    done = run(server_4k, tmp_path, *args, "--out-dir", "i18n")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == [
        "i18n/de-DE/docs/charset.md",
        "i18n/de-DE/docs/encoders.md",
        "i18n/fr-FR/docs/charset.md",
        "i18n/fr-FR/docs/encoders.md",
    ]
    manifest = json.loads((tmp_path / "i18n/manifest.json").read_text())
    assert manifest["failures"] == []
    charset = [f for f in manifest["files"] if f["path"].endswith("charset.md")]
    assert len(charset) == 2  # once per locale
    for entry in charset:
        assert len(entry["parts"]) >= 2 and {p["status"] for p in entry["parts"]} == {"ok"}
        written = tmp_path / "i18n" / entry["path"]
        assert entry["bytes"] == len(written.read_bytes())
