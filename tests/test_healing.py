"""A chunk the server refuses as too long is sent in parts, joined under its own heading."""

from __future__ import annotations

import json
import re

from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app

LINE = re.compile(r"value_\d+")


def echo_lines(body: dict) -> str:
    """The worker answer: every marker of its input, in order (so nothing can be lost)."""
    return "saw " + " ".join(LINE.findall(body["messages"][-1]["content"]))


def big_tree(make_tree, lines: int = 200):
    big = "".join(f"value_{i} = compute({i}, 2, 3)\n\n" for i in range(lines))
    return make_tree({"a.py": "value_a = 1\n", "big.py": big})


def section(root, *more: str) -> list[str]:
    return ["section", str(root), "--by", "file", "-m", "test-model", "-j", "2", *more]


def test_a_chunk_too_long_for_the_server_heals_and_a_rerun_sends_nothing(
    llm: LLMServer, make_tree
) -> None:
    llm.context_window = 700  # the server's own limit; the plan believes the table's 8,192
    llm.script(None, echo_lines)
    root = big_tree(make_tree)
    result = CliRunner().invoke(app, section(root, "--format", "json"))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    healed = doc["tasks"][1]
    parts = healed["split"]
    assert 2 <= parts <= 8 and healed["label"] == f"chunk 2/2 ({parts} parts)"
    assert healed["status"] == "ok" and healed["paths"] == [f"{root}/big.py"]
    seen = LINE.findall(healed["output"])
    assert seen == [f"value_{i}" for i in range(200)]  # every line, once, in order
    assert "split" not in doc["tasks"][0]
    assert any("big.py" in w and f"sent in {parts} parts" in w for w in doc["warnings"])
    refused = [r for r in llm.requests if r.status == 400]
    assert 1 <= len(refused) <= 1 + parts // 2 and all(
        "value_199" in r.prompt or "value_0" in r.prompt for r in refused
    )
    assert f"## chunk 2/2 ({parts} parts): {root}/big.py" in doc["result"]
    assert f"1 sent in parts ({parts} part calls)" in result.stderr  # the summary counts them

    llm.clear()
    again = CliRunner().invoke(app, section(root, "--format", "json"))
    assert again.exit_code == 0, again.stderr
    assert llm.requests == []  # the refusal is remembered, the parts are cached
    assert json.loads(again.stdout)["result"] == doc["result"]


def test_a_prompt_that_cannot_fit_even_with_an_empty_chunk_exits_2(
    llm: LLMServer, make_tree
) -> None:
    llm.context_window = 300
    root = big_tree(make_tree, 20)
    system = "Follow the house rules. " * 60  # ~300 tokens before any input
    result = CliRunner().invoke(app, section(root, "--system", system, "--max-tokens", "50"))
    assert result.exit_code == 2
    assert "the prompt alone" in result.stderr and "300 tokens" in result.stderr


def test_a_healed_chunk_is_written_to_its_own_file(
    llm: LLMServer, make_tree, tmp_path, monkeypatch
) -> None:
    llm.context_window = 700
    llm.script(None, echo_lines)
    big_tree(make_tree)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, section("src", "--out-dir", "out"))
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["inputs"] == ["src/big.py"])
    assert re.fullmatch(r"chunk 2/2 \(\d parts\)", entry["label"])
    big = (tmp_path / "out" / entry["path"]).read_text()
    assert LINE.findall(big) == [f"value_{i}" for i in range(200)]


def test_a_healed_json_answer_is_one_document_of_its_parts(llm: LLMServer, make_tree) -> None:
    llm.context_window = 700
    llm.script(None, lambda body: json.dumps({"seen": LINE.findall(echo_lines(body))}))
    root = big_tree(make_tree)
    result = CliRunner().invoke(app, section(root, "--merge", "json", "--format", "json"))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    healed = doc["tasks"][1]
    assert healed["split"] >= 2 and json.loads(healed["output"])["seen"][-1] == "value_199"
    merged = json.loads(doc["result"])["seen"]
    assert merged == [f"value_{i}" for i in range(200)]  # every line, once, in order
