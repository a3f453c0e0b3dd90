"""`--format sarif`: review findings as SARIF 2.1.0 for code scanning, read from a JSON merge.

The log is checked against the fields SARIF 2.1.0 requires (sarifLog, run, tool, toolComponent,
result, message, physicalLocation, region) and those code scanning reads (a relative URI with
forward slashes, a start line of at least 1, the level from the severity).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from llmserver import LLMServer
from typer.testing import CliRunner

from parallelize.cli.app import app
from parallelize.records import ChatRequest, RunResult, SectionSource, Task
from parallelize.render.findings import Places, collect_findings
from parallelize.render.sarif import sarif_text

KEY = "sk-test-loopback-key-0000"  # the llm fixture's API key
FILES = {"a.py": "import os\nos.system(input())\n", "pkg/b.py": "x = 1\ny = 2\nz = x / 0\n"}

#: What SARIF 2.1.0 requires of each object this tool writes (the OASIS schema's `required`
#: and the region's `startLine` minimum), and the version code scanning accepts.
REQUIRED = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {"type": "array", "items": {"$ref": "#/$defs/run"}},
    },
    "$defs": {
        "run": {
            "type": "object",
            "required": ["tool"],
            "properties": {
                "tool": {
                    "type": "object",
                    "required": ["driver"],
                    "properties": {
                        "driver": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {"type": "object", "required": ["id"]},
                                },
                            },
                        }
                    },
                },
                "results": {"type": "array", "items": {"$ref": "#/$defs/result"}},
            },
        },
        "result": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": {
                    "type": "object",
                    "required": ["text"],
                    "properties": {"text": {"type": "string"}},
                },
                "level": {"enum": ["none", "note", "warning", "error"]},
                "locations": {"type": "array", "items": {"$ref": "#/$defs/location"}},
            },
        },
        "location": {
            "type": "object",
            "properties": {
                "physicalLocation": {
                    "type": "object",
                    "required": ["artifactLocation"],
                    "properties": {
                        "artifactLocation": {
                            "type": "object",
                            "required": ["uri"],
                            "properties": {"uri": {"type": "string"}},
                        },
                        "region": {
                            "type": "object",
                            "properties": {"startLine": {"type": "integer", "minimum": 1}},
                        },
                    },
                }
            },
        },
    },
}


def check_sarif(log: dict[str, Any]) -> list[dict[str, Any]]:
    """The log's results, after checking what SARIF and code scanning require of them."""
    Draft7Validator(REQUIRED).validate(log)
    assert log["$schema"].startswith("https://") and log["version"] == "2.1.0"
    (run,) = log["runs"]
    assert run["tool"]["driver"]["name"] == "parallelize"
    rules = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    for result in run["results"]:
        assert rules[result["ruleIndex"]] == result["ruleId"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        uri = physical["artifactLocation"]["uri"]
        assert not uri.startswith(("/", "./")) and "\\" not in uri, uri
        assert physical["region"]["startLine"] >= 1
    return run["results"]


def review(*findings: tuple[str, Any, str, str]) -> str:
    """A code-review answer: findings as (path, line, severity, message)."""
    items = [{"path": p, "line": n, "severity": s, "message": m} for p, n, s, m in findings]
    return json.dumps({"findings": items})


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def section(*extra: str) -> list[str]:
    return ["section", "src", "--by", "file", "-m", "test-model", "--no-cache", *extra]


def test_a_code_review_becomes_sarif_with_levels_places_and_rules(llm: LLMServer, make_tree):
    make_tree(FILES)
    llm.script("a.py", review(("a.py", 2, "high", "shell injection: os.system(input())")))
    llm.script(
        "b.py",
        review(("src/pkg/b.py", 3, "medium", "division by zero"), ("b.py", 1, "low", "name")),
    )
    done = run_cli(*section("--recipe", "code-review", "--format", "sarif"))
    assert done.exit_code == 0, done.stderr
    results = check_sarif(json.loads(done.stdout))
    seen = {
        (
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
            r["level"],
            r["message"]["text"],
        )
        for r in results
    }
    assert seen == {
        ("src/a.py", 2, "error", "shell injection: os.system(input())"),  # a bare name, found
        ("src/pkg/b.py", 3, "warning", "division by zero"),
        ("src/pkg/b.py", 1, "note", "name"),  # a shortened path, found
    }
    assert [r["level"] for r in results] == ["error", "warning", "note"]  # most severe first
    assert {r["ruleId"] for r in results} == {"code-review"}


def test_review_aspects_findings_at_any_depth_use_problem_and_one_rule_per_aspect(
    llm: LLMServer, make_tree
):
    make_tree({"a.py": "A = 1\n"})
    finding = {"path": "src/a.py", "line": 1, "severity": "high", "problem": "P", "fix": "F"}
    llm.script(
        "Aspect: security",
        json.dumps({"verdict": "request_changes", "effort_hours": 1, "findings": [finding]}),
    )
    llm.script(None, json.dumps({"verdict": "approve", "effort_hours": 0, "findings": []}))
    done = run_cli(*section("--recipe", "review-aspects", "--format", "sarif"))
    assert done.exit_code == 0, done.stderr
    log = json.loads(done.stdout)
    (result,) = check_sarif(log)
    assert result["ruleId"] == "review-aspects/security" and result["message"]["text"] == "P"
    assert result["properties"] == {"severity": "high", "fix": "F"}
    assert log["runs"][0]["automationDetails"]["id"] == "parallelize/review-aspects/"


def test_a_clean_review_is_a_valid_log_without_results_and_o_writes_it(
    llm: LLMServer, make_tree, tmp_path: Path
):
    make_tree(FILES)
    llm.script(None, review())
    done = run_cli(*section("--recipe", "code-review", "--format", "sarif", "-o", "r.sarif"))
    assert done.exit_code == 0 and done.stdout == ""
    assert check_sarif(json.loads((tmp_path / "r.sarif").read_text())) == []


def test_the_api_key_never_reaches_the_sarif(llm: LLMServer, make_tree):
    make_tree({"a.py": "A = 1\n"})
    llm.script(None, review(("a.py", 1, "high", f"the key {KEY} is in the code")))
    done = run_cli(*section("--recipe", "code-review", "--format", "sarif"))
    assert done.exit_code == 0, done.stderr
    assert KEY not in done.stdout and "[REDACTED:api-key]" in done.stdout


@pytest.mark.parametrize(
    ("args", "requests"),
    [
        (["vote", "Name a colour", "-n", "2", "-m", "test-model", "--format", "sarif"], 0),
        (section("--recipe", "summarize", "--format", "sarif"), 0),  # concat: refused up front
        (section("--recipe", "code-review", "--format", "sarif", "--dry-run"), 0),
    ],
    ids=["vote", "not-a-json-merge", "dry-run"],
)
def test_sarif_without_findings_to_write_is_exit_2_with_one_line(
    llm: LLMServer, make_tree, args: list[str], requests: int
):
    make_tree(FILES)
    done = run_cli(*args)
    assert done.exit_code == 2, done.stderr
    assert done.stdout == ""
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: --format sarif: ")
    assert llm.count() == requests


def test_a_json_merge_without_findings_arrays_is_exit_2(llm: LLMServer, make_tree, tmp_path):
    make_tree(FILES)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prompt: 'Count: {{ input }}'\nmerge: {strategy: json}\n")
    llm.script(None, '{"count": 1}')
    done = run_cli(*section("--recipe", str(recipe), "--format", "sarif"))
    assert done.exit_code == 2 and done.stdout == ""
    assert "error: --format sarif: the result has no findings with a path and a line" in (
        done.stderr
    )


def test_a_failed_run_writes_no_sarif_and_keeps_its_exit_code(llm: LLMServer, make_tree):
    make_tree(FILES)
    llm.script(None, status=500)
    done = run_cli(*section("--recipe", "code-review", "--format", "sarif", "--max-retries", "0"))
    assert done.exit_code == 1, done.stderr
    assert done.stdout == ""  # no empty log: code scanning would close every open alert


@pytest.mark.parametrize("unstarted", [False, True], ids=["failed", "not-started"])
def test_a_partial_review_writes_no_sarif_and_warns_how_many_chunks_were_not_reviewed(
    llm: LLMServer, make_tree, tmp_path: Path, unstarted: bool
):
    make_tree({f"f{i}.py": f"V{i} = {i}\n" for i in range(6)})
    llm.script("f0.py", status=500)  # one chunk fails; the others find something
    llm.script(None, review(("f1.py", 1, "high", "bad")))
    limits = ["-j", "1", "--max-failures", "1"] if unstarted else []
    args = section("--recipe", "code-review", "--format", "sarif", "-o", "r.sarif")
    done = run_cli(*args, "--max-retries", "0", *limits)
    assert done.exit_code == 1, done.stderr  # the run's own code
    assert not (tmp_path / "r.sarif").exists() and done.stdout == ""
    (warning,) = [x for x in done.stderr.splitlines() if "no SARIF written" in x]
    if unstarted:
        assert warning.startswith(
            "warning: --format sarif: no SARIF written: 6 of 6 chunks were not reviewed "
            "(chunk 1/6, chunk 2/6, chunk 3/6 and 3 more); "
        )
    else:
        assert warning.startswith(
            "warning: --format sarif: no SARIF written: 1 of 6 chunks was not reviewed "
            "(chunk 1/6); uploaded, a partial log would close the code-scanning alerts"
        )


def test_a_refused_format_still_writes_the_summary_report_and_keeps_the_result(
    llm: LLMServer, make_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    make_tree(FILES)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prompt: 'Count: {{ input }}'\nmerge: {strategy: json}\n")
    llm.script(None, '{"count": 1}')
    args = section("--recipe", str(recipe), "--format", "sarif", "--report", "r.md")
    done = run_cli(*args, "-o", "r.sarif")
    assert done.exit_code == 2 and not (tmp_path / "r.sarif").exists()
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: --format sarif: the result has no findings with a path")
    assert line.endswith("; the result went to stdout")
    assert json.loads(done.stdout) == {"count": 1}  # kept: with -o, stdout is free
    assert "### Result" in (tmp_path / "summary.md").read_text()  # the step summary was written
    assert "count" in (tmp_path / "r.md").read_text()  # and the report
    assert "summary: 2 chunks" in done.stderr
    done = run_cli(*args)  # without -o stdout was the SARIF's: the result goes to stderr
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-2].endswith("; the result is above on stderr")
    assert '"count": 1' in done.stderr.split("the result (not written as asked):", 1)[1]


def result_with(output: str, paths: tuple[str, ...] = ("src/a.py",)) -> RunResult:
    source = SectionSource("c1", paths, 10)
    task = Task(0, "chunk 1/1", ChatRequest("m", ({"role": "user", "content": "x"},)), source)
    return RunResult("section", "code-review", "m", [task], output=output)


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ({"path": "src/a.py", "line": 3}, ("src/a.py", 3)),
        ({"path": "./src\\a.py", "line": 3}, ("src/a.py", 3)),
        ({"path": "a.py", "line": "7-9"}, ("src/a.py", 7)),
        ({"path": "src/a.py", "line": 0}, ("src/a.py", 1)),
        ({"path": "src/a.py", "line": 2.0}, ("src/a.py", 2)),
        ({"path": "src/a.py", "line": True}, None),
        ({"path": "src/a.py", "line": "top"}, None),
        ({"path": "", "line": 1}, None),
        ({"line": 1}, None),
        ("a string", None),
    ],
)
def test_findings_need_a_path_and_a_line(entry: Any, where: tuple[str, int] | None) -> None:
    found = collect_findings(result_with(json.dumps({"findings": [entry]})))
    assert found.arrays == 1
    assert [(f.path, f.line) for f in found.items] == ([where] if where else [])
    assert found.unlocated == (0 if where else 1)


def test_findings_are_read_at_any_depth_and_text_is_message_else_problem() -> None:
    doc = {
        "findings": [{"path": "a.py", "line": 1, "message": "M", "problem": "ignored"}],
        "security": {"findings": [{"path": "a.py", "line": 2, "problem": "P"}]},
        "reviews": [{"deep": {"findings": [{"path": "a.py", "line": 3}]}}],
        "other": [{"path": "a.py", "line": 4}],  # not in a findings array
    }
    found = collect_findings(result_with(json.dumps(doc)))
    assert found.arrays == 3
    texts = [(f.line, f.text, f.group) for f in found.items]
    assert texts == [(1, "M", ""), (2, "P", "security"), (3, "(no message)", "reviews.deep")]


def test_not_json_or_no_findings_arrays_is_no_findings_document() -> None:
    for output in ("- [high] a.py:1: text", '{"count": 3}', ""):
        assert collect_findings(result_with(output)).arrays == 0
        with pytest.raises(Exception, match="--format sarif: the result has no findings"):
            sarif_text(result_with(output))


def test_paths_are_relative_to_the_workspace_root_with_forward_slashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "repo" / "service"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    places = Places(["src/a.py"], root=tmp_path / "repo")  # run from a folder of the repository
    assert places.repo_path("src/a.py") == "service/src/a.py"
    assert places.repo_path("a.py") == "service/src/a.py"
    assert places.repo_path(str(sub / "src" / "a.py")) == "service/src/a.py"
    assert places.repo_path("src\\x\\..\\a.py") == "service/src/a.py"
    assert places.repo_path("service/src/a.py") == "service/src/a.py"  # from the root
    assert places.repo_path("/elsewhere/z.py") is None  # no input of the run
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "repo"))
    found = collect_findings(result_with(json.dumps({"findings": [{"path": "a.py", "line": 1}]})))
    assert found.items[0].path == "service/src/a.py"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "file:///etc/passwd",
        "../../x/a.py",
        "src/../../a.py",
        "src/other.py",
        "..",
        "b.py",
    ],
)
def test_a_path_that_names_no_input_of_the_run_has_no_location(path: str) -> None:
    doc = {"findings": [{"path": path, "line": 1}, {"path": "a.py", "line": 2, "severity": "low"}]}
    result = result_with(json.dumps(doc))
    found = collect_findings(result)
    assert [(f.path, f.line) for f in found.items] == [("src/a.py", 2)] and found.unlocated == 1
    log = json.loads(sarif_text(result))
    (only,) = check_sarif(log)
    assert only["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "src/a.py",
        "uriBaseId": "%SRCROOT%",
    }
    assert log["runs"][0]["properties"]["unlocatedFindings"] == 1


def test_an_input_outside_the_repository_has_no_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    places = Places([str(tmp_path / "outside.py"), "src/a.py"], root=tmp_path / "repo")
    assert places.repo_path(str(tmp_path / "outside.py")) is None
    assert places.repo_path("outside.py") is None
    assert places.repo_path("a.py") == "src/a.py"


def test_a_review_reporting_only_places_outside_the_inputs_annotates_no_file(
    llm: LLMServer, make_tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(FILES)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    llm.script(None, review(("/etc/passwd", 1, "high", "leak"), ("../../x.py", 2, "low", "far")))
    done = run_cli(*section("--recipe", "code-review", "--format", "sarif"))
    assert done.exit_code == 2 and done.stdout == ""  # no located finding: no log that closes all
    assert "file=" not in done.stderr and "::warning" not in done.stderr
