"""Master-clone fan-out: matrix × inputs, files under --out-dir (confined, atomic), manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.merge.files import MANIFEST, TEMP_PREFIX

LOCALES = "locale=fr-FR,es-ES,de-DE"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


@pytest.fixture
def docs(make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two small documents under ./docs, run from their parent (relative input paths)."""
    make_tree({"a.md": "# Alpha\nHello\n", "guide/b.md": "# Beta\nBye\n"}, name="docs")
    monkeypatch.chdir(tmp_path)
    return "docs"


def recipe_file(tmp_path: Path, merge: str, prompt: str = "Translate to {{ locale }}:") -> str:
    path = tmp_path / "r.yaml"
    path.write_text(f"model: test-model\nprompt: '{prompt} {{{{ input }}}}'\n{merge}")
    return str(path)


def translate(cli: CliRunner, *args: str):
    return cli.invoke(app, ["section", "--recipe", "translate", "-m", "test-model", *args])


def test_matrix_product_sizes(llm: LLMServer, cli, docs) -> None:
    each = ["--each", "tone=formal,casual", "--each", LOCALES]
    plan = cli.invoke(
        app,
        [
            "section",
            docs,
            "--by",
            "file",
            "-p",
            "{{ tone }} {{ locale }}",
            *each,
            "--dry-run",
            "--format",
            "json",
        ],
    )
    assert plan.exit_code == 0, plan.stderr
    labels = [t["label"] for t in json.loads(plan.stdout)["plan"]]
    assert len(labels) == 2 * 2 * 3  # inputs × tone × locale
    assert labels[0] == "chunk 1/2 [formal_fr-FR]" and labels[-1] == "chunk 2/2 [casual_de-DE]"
    run = cli.invoke(
        app, ["section", docs, "--by", "file", "-p", "{{ tone }} {{ locale }}", *each, "-q"]
    )
    assert run.exit_code == 0, run.stderr
    assert len(llm.requests) == 12
    prompts = sorted(r.last_user.split("\n")[0] for r in llm.requests)
    assert prompts.count("formal es-ES") == 2  # each clone sees only its own values
    assert run.stdout.startswith("# formal_fr-FR\n\n## chunk 1/2: docs/a.md")
    again = cli.invoke(
        app, ["section", docs, "--by", "file", "-p", "{{ tone }} {{ locale }}", *each]
    )
    assert "summary: 2 chunks x 6 = 12 sections, 12 calls (12 cached)" in again.stderr


def test_each_makes_path_optional(llm: LLMServer, cli) -> None:
    result = cli.invoke(
        app,
        [
            "section",
            "-p",
            "Greet in {{ locale }}",
            "--each",
            "locale=fr,de",
            "-m",
            "test-model",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert sorted(r.last_user for r in llm.requests) == ["Greet in de", "Greet in fr"]
    assert (
        result.stdout
        == "# fr\n\n## chunk 1/1\n\nECHO Greet in fr\n\n# de\n\n## chunk 1/1\n\nECHO Greet in de\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--each", "locale"], "--each: expected VAR=v1,v2,... (got 'locale')"),
        (["--each", "a=1", "--each", "a=2"], "'a' is given twice"),
        (["--each", "input=x"], "'input' cannot be a variable name"),
        (["--each", "locale=fr"], "uses none of {{ locale }}"),
    ],
)
def test_bad_each_flags_exit_2(llm: LLMServer, cli, args, message) -> None:
    result = cli.invoke(app, ["section", "-p", "hello", *args])
    assert result.exit_code == 2
    assert message in result.stderr and llm.all_requests == []


def test_clones_write_files_with_a_manifest(llm: LLMServer, cli, docs, tmp_path: Path) -> None:
    result = translate(cli, docs, "--out-dir", "out", "-q")
    assert result.exit_code == 0, result.stderr
    written = result.stdout.splitlines()
    assert len(written) == 6 and "out/fr-FR/docs/a.md" in written
    assert "out/de-DE/docs/guide/b.md" in written
    text = (tmp_path / "out/es-ES/docs/guide/b.md").read_text()
    assert text.startswith("ECHO Translate only the human") and "the locale es-ES:" in text
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert [c["clone"] for c in manifest["clones"]] == ["fr-FR", "es-ES", "de-DE"]
    assert {c["status"] for c in manifest["clones"]} == {"ok"}
    entry = next(f for f in manifest["files"] if f["path"] == "de-DE/docs/a.md")
    assert entry["matrix"] == {"locale": "de-DE"} and entry["inputs"] == ["docs/a.md"]
    assert entry["chunk_id"] and entry["bytes"] == len(
        (tmp_path / "out/de-DE/docs/a.md").read_bytes()
    )
    assert manifest["failures"] == []


def test_a_failed_clone_leaves_no_file(llm: LLMServer, cli, docs, tmp_path: Path) -> None:
    llm.script("locale de-DE", status=500)
    llm.script(lambda b: "es-ES" in str(b) and "Beta" in str(b), "cut sho", finish_reason="length")
    result = translate(cli, docs, "--out-dir", "out", "--max-retries", "0", "-q")
    assert result.exit_code == 1
    assert not (tmp_path / "out/de-DE").exists()
    assert not (tmp_path / "out/es-ES/docs/guide/b.md").exists()  # truncated: not a whole file
    assert (tmp_path / "out/es-ES/docs/a.md").exists()
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    status = {c["clone"]: c["status"] for c in manifest["clones"]}
    assert status == {"fr-FR": "ok", "es-ES": "partial", "de-DE": "failed"}
    failures = {(f["clone"], f["path"]): f["status"] for f in manifest["failures"]}
    assert failures == {
        ("es-ES", "es-ES/docs/guide/b.md"): "truncated",
        ("de-DE", "de-DE/docs/a.md"): "failed",
        ("de-DE", "de-DE/docs/guide/b.md"): "failed",
    }
    assert len(result.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    ("merge", "message"),
    [
        ("path: '../{{ chunk_id }}.md'", "leaves --out-dir"),
        ("path: '/tmp/{{ chunk_id }}.md'", "is absolute"),
        ("path: '{{ locale }}/../../x/{{ chunk_id }}'", "leaves --out-dir"),
        ("path: 'same.md'", "would both write 'same.md'"),
        ("path: 'A/{{ locale }}.md'\n  # case-folded duplicates", None),
        ("path: '{{ path }}'", "{{ path }} is only available with --by file"),
        ("path: 'manifest.json'", "is reserved"),
        ("path: '{{ locale }}/manifest.json'\nmatrix: {locale: ['.']}", "locale[0] = '.' is not"),
    ],
)
def test_unsafe_or_shared_paths_are_refused_at_plan_time(
    llm: LLMServer, cli, docs, tmp_path: Path, merge: str, message: str | None
) -> None:
    recipe = recipe_file(tmp_path, f"matrix: {{locale: [fr, de]}}\nmerge:\n  {merge}\n")
    result = cli.invoke(app, ["section", docs, "--recipe", recipe, "--out-dir", "out", "-q"])
    if message is None:
        assert result.exit_code == 0, result.stderr  # distinct names stay distinct
        return
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr
    assert llm.all_requests == [] and not (tmp_path / "out").exists()


def test_case_only_differences_collide(llm: LLMServer, cli, docs, tmp_path: Path) -> None:
    recipe = recipe_file(
        tmp_path,
        "matrix: {locale: [fr, FR]}\nmerge:\n  path: '{{ locale }}.md'\n",
        prompt="{{ locale }}",
    )
    result = cli.invoke(app, ["section", docs, "--recipe", recipe, "--out-dir", "out", "-c", "1"])
    assert result.exit_code == 2 and "would both write 'FR.md'" in result.stderr


def test_each_values_cannot_escape(llm: LLMServer, cli, docs, tmp_path: Path) -> None:
    result = translate(cli, docs, "--each", "locale=../../etc", "--out-dir", "out")
    assert result.exit_code == 2
    assert "locale[0] = '../../etc' contains a path separator" in result.stderr
    assert llm.all_requests == []


def test_symlinks_that_escape_are_refused(llm: LLMServer, cli, docs, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "fr-FR").symlink_to(outside, target_is_directory=True)
    result = translate(cli, docs, "--out-dir", "out")
    assert result.exit_code == 2 and "leads outside" in result.stderr
    assert llm.all_requests == [] and list(outside.iterdir()) == []


def test_files_merge_needs_an_output_directory(llm: LLMServer, cli, docs) -> None:
    result = cli.invoke(app, ["section", docs, "-p", "x", "--merge", "files"])
    assert result.exit_code == 2 and "--merge files needs an output directory" in result.stderr


def test_kill_mid_run_leaves_only_whole_files(
    llm: LLMServer, entry_point: str, docs, tmp_path: Path
) -> None:
    llm.script("locale de-DE", stall=60)  # de-DE hangs until the run is killed
    llm.script(None, lambda body: "WHOLE FILE " + "word " * 2000 + "END")
    out = tmp_path / "out"
    command = [entry_point, "section", docs, "--recipe", "translate", "-m", "test-model"]
    with subprocess.Popen(
        [*command, "--out-dir", "out", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as proc:
        try:
            deadline = time.monotonic() + 30
            while len(list(out.glob("[fe][rs]-*/**/*.md"))) < 4 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read()  # still waiting on de-DE
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "es-ES/docs/a.md",
        "es-ES/docs/guide/b.md",
        "fr-FR/docs/a.md",
        "fr-FR/docs/guide/b.md",
    ]
    for name in files:
        text = (out / name).read_text()
        assert text.startswith("WHOLE FILE ") and text.endswith("END\n")
    assert not any(p.name.startswith(TEMP_PREFIX) for p in out.rglob("*"))
    assert not (out / "de-DE").exists() and not (out / MANIFEST).exists()
    assert os.listdir(out) and proc.returncode == -signal.SIGKILL
