"""`--merge json` prints one strict RFC 8259 document, and its repair calls fit the window.

Python's `json` writes NaN and Infinity unless told not to, and reads them (and 1e999) back:
stdout must stay readable by any JSON parser, whatever the workers answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app

SCHEMA = (
    "  schema:\n"
    "    type: {kind}\n"
    "    properties: {{effort: {{type: number}}, findings: {{type: array}}}}\n"
)


def strict_loads(text: str) -> Any:
    """json.loads that refuses what RFC 8259 has no place for (NaN, Infinity)."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def run(tmp_path: Path, files: dict[str, str], *, extra: str = "", kind: str = "object"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, text in files.items():
        (src / name).write_text(text)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: test-model\nprompt: 'Review {{ input }}'\nchunking: {by: file}\n"
        "merge:\n  strategy: json\n  rules: {effort: sum}\n" + SCHEMA.format(kind=kind) + extra
    )
    return CliRunner().invoke(app, ["section", str(src), "--recipe", str(recipe)])


def test_nan_infinity_and_1e999_are_repaired_not_printed(llm: LLMServer, tmp_path: Path) -> None:
    llm.script("could not be used", '{"effort": 2, "findings": ["fixed"]}')
    llm.script("ALPHA", '{"effort": Infinity, "findings": ["a"]}')
    llm.script("BETA", '{"effort": 1e999, "findings": ["b"]}')
    llm.script("GAMMA", '{"effort": NaN, "findings": ["c"]}')
    result = run(tmp_path, {"a.txt": "ALPHA\n", "b.txt": "BETA\n", "c.txt": "GAMMA\n"})
    assert result.exit_code == 0, result.stderr
    assert strict_loads(result.stdout) == {"effort": 6, "findings": ["fixed"] * 3}
    repairs = [r.last_user for r in llm.requests if "could not be used" in r.last_user]
    assert len(repairs) == 3
    assert any("Infinity is not a JSON value" in text for text in repairs)
    assert any("1e999 is too large" in text for text in repairs)


def test_a_sum_that_overflows_is_null_with_a_warning(llm: LLMServer, tmp_path: Path) -> None:
    llm.script(None, '{"effort": 1.5e308, "findings": []}')
    files = {"a.txt": "one\n", "b.txt": "two\n", "c.txt": "three\n"}
    result = run(tmp_path, files)
    assert result.exit_code == 0, result.stderr
    assert strict_loads(result.stdout) == {"effort": None, "findings": []}
    assert "'effort': rule 'sum' gives inf, not a finite JSON number; null instead" in (
        result.stderr
    )


@pytest.mark.parametrize(("kind", "empty"), [("object", {}), ("array", [])])
def test_every_worker_failed_still_prints_a_document(
    llm: LLMServer, tmp_path: Path, kind: str, empty: object
) -> None:
    llm.script(None, "no JSON here, sorry")
    result = run(tmp_path, {"a.txt": "one\n", "b.txt": "two\n"}, kind=kind)
    assert result.exit_code == 1
    assert strict_loads(result.stdout) == empty


def test_aspects_that_all_failed_are_empty_documents(llm: LLMServer, tmp_path: Path) -> None:
    llm.script("Aspect: speed", '{"effort": 1, "findings": ["slow"]}')
    llm.script(None, "nothing")
    aspects = "aspects:\n  - name: speed\n  - name: safety\n"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: test-model\nprompt: 'Aspect: {{ aspect }} {{ input }}'\n"
        + aspects
        + "merge:\n  strategy: json\n"
    )
    result = CliRunner().invoke(app, ["section", str(src), "--recipe", str(recipe)])
    assert result.exit_code == 1
    assert strict_loads(result.stdout) == {
        "speed": {"effort": 1, "findings": ["slow"]},
        "safety": {},
    }


def test_a_repair_is_cut_to_fit_the_window(llm: LLMServer, tmp_path: Path) -> None:
    """A chunk planned to fill the window plus its answer echoed in full overflow it: the run
    then exited 2 and advised a re-run that failed the same way."""
    llm.llama = True  # /props says n_ctx, /tokenize counts as the server refuses
    llm.context_window = 1_000
    llm.script(lambda body: "could not be used" in str(body), '{"effort": 1, "findings": []}')
    llm.script(None, '{"effort": 1, "findings": ["' + "x " * 2_000)  # cut at max_tokens
    source = "".join(f"line {i} of a file to review\n" for i in range(200))
    result = run(tmp_path, {"a.txt": source}, extra="tokenizer: server\nmax_tokens: 300\n")
    assert result.exit_code == 0, result.stderr
    assert strict_loads(result.stdout)["findings"] == []
    assert "re-run" not in result.stderr and "exceeds the available context" not in result.stderr
    repairs = [r for r in llm.requests if "could not be used" in r.last_user]
    assert len(repairs) > 1 and all(r.status == 200 for r in repairs)
    for repair in repairs:  # a chunk that filled its window: the answer goes, then some lines
        assert repair.body["messages"][-2]["content"].endswith("of this reply left out ...]")
    # Which part's repair needed lines cut depends on its size, not on the order of arrival.
    assert any("lines left out here to fit the context window" in r.prompt for r in repairs)
