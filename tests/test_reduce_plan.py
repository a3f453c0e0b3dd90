"""The map-reduce tree is planned in the run's window before the first reduce call."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.inputs.tokens import for_model, get_counter
from parallelize.merge.mapreduce import reduce_budget
from parallelize.recipe.load import parse_recipe

MARKER = re.compile(r"MARKER-\d+")


def markers(body: dict) -> str:
    return " ".join(dict.fromkeys(MARKER.findall(body["messages"][-1]["content"])))


def notes(body: dict) -> str:
    return markers(body) + " lorem" * 40


def tree(make_tree, monkeypatch, n: int = 12) -> str:
    """The input folder, named relative to the cwd: frames carry its path, and a tight window
    must not depend on how long the test's temporary directory is named."""
    root = make_tree({f"m{i:02d}.txt": f"MARKER-{i}\n" for i in range(n)})
    monkeypatch.chdir(root.parent)
    return root.name


def run(root, *more: str) -> tuple[int, dict, str]:
    args = [
        "section", str(root), "--by", "file", "-m", "test-model", "-p", "Note {{ input }}",
        "--merge", "llm", "--max-tokens", "60", "--format", "json", *more,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    return result.exit_code, json.loads(result.stdout or "{}"), result.stderr


def test_the_dry_run_shows_the_tree_at_worst(make_tree, monkeypatch) -> None:
    root = tree(make_tree, monkeypatch)
    result = CliRunner().invoke(
        app, ["section", str(root), "--by", "file", "-p", "Note", "--merge", "llm",
              "--max-tokens", "200", "--context-window", "1000", "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    head = re.search(
        r"reduce plan: at most (\d+) reduce call\(s\) in (\d) level\(s\)", result.stdout
    )
    assert head and int(head.group(2)) >= 2, result.stdout
    assert "context window 1,000 tokens" in result.stdout
    assert re.search(
        r"level 1: \d+ call\(s\) reading 12 part\(s\), output capped at", result.stdout
    )
    as_json = CliRunner().invoke(
        app, ["section", str(root), "--by", "file", "-p", "Note", "--merge", "llm",
              "--max-tokens", "200", "--context-window", "1000", "--dry-run", "--format", "json"],
    )  # fmt: skip
    plan = json.loads(as_json.stdout)["reduce_plan"]
    assert plan["worst_case"] and plan["context_window"] == 1000
    assert plan["calls"] == int(head.group(1)) and len(plan["levels"]) == int(head.group(2))
    assert plan["levels"][-1] == {"calls": 1, "parts": plan["levels"][-2]["calls"],
                                  "max_tokens": 200, "final": True}  # fmt: skip


def test_the_tree_uses_the_servers_window_and_reaches_one_output(
    llm: LLMServer, make_tree, monkeypatch
) -> None:
    llm.llama = True
    llm.context_window = 700  # /props says 700; the table would say 8,192
    llm.script(lambda body: "Combine the partial" in str(body), markers)
    llm.script(None, notes)
    code, doc, stderr = run(tree(make_tree, monkeypatch))
    assert code == 0, stderr
    assert {r.status for r in llm.requests} == {200}  # planned in the right window: no 400
    merge = doc["merge"]
    assert merge["plan"]["context_window"] == 700 and merge["depth"] >= 2
    assert merge["calls"] == merge["plan"]["calls"] and len(merge["levels"][-1]) == 1
    assert set(MARKER.findall(doc["result"])) == {f"MARKER-{i}" for i in range(12)}
    assert not [w for w in doc["warnings"] if "fell back" in w]


def test_a_reduce_batch_the_server_refuses_is_split(llm: LLMServer, make_tree, monkeypatch) -> None:
    llm.context_window = 900  # the run believes 8,192, so the final batch is too long
    llm.script(lambda body: "Combine the partial" in str(body), markers)
    llm.script(None, notes)
    code, doc, stderr = run(tree(make_tree, monkeypatch, 16))
    assert code == 0, stderr
    refused = [r for r in llm.requests if r.status == 400]
    assert len(refused) == 1 and "Combine the partial" in refused[0].prompt
    assert doc["merge"]["depth"] == 2 and len(doc["merge"]["levels"][-1]) == 1
    assert set(MARKER.findall(doc["result"])) == {f"MARKER-{i}" for i in range(16)}
    assert not [w for w in doc["warnings"] if "fell back" in w]


def test_the_reduce_keeps_the_margin_the_map_kept_for_a_foreign_counter() -> None:
    """tiktoken counting for a Llama keeps a third of the window free in the map, so in the
    reduce too: the tree is planned in the window the chunks were."""
    recipe = parse_recipe("model: llama-3\nprompt: 'x {{ input }}'\nmerge: {strategy: llm}\n")
    counter = get_counter("llama-3", "cl100k")
    foreign = reduce_budget(
        recipe, model="llama-3", window=8_000, counter=for_model(counter, "llama-3")
    )
    own = reduce_budget(recipe, model="llama-3", window=8_000, counter=replace(counter, margin=0.0))
    assert foreign.room < own.room - 0.25 * 8_000
