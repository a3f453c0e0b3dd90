"""`--format sarif`: a section run's findings as SARIF 2.1.0, for GitHub code scanning.

One run, one rule per findings array (`code-review`, `review-aspects/security`), one result per
finding: its text as `message.text`, its severity as the level (high error, medium warning, low
note), its place as a repository-relative URI and `region.startLine`. A result without a
`findings` array is refused (exit 2) rather than written as an empty log, which code scanning
would read as "every earlier alert is fixed"; so is a run that failed before it had one (its
own exit code stands, and nothing is written). For the same reason a run where any chunk failed
or was not started writes no log at all, only a warning: its files were never reviewed.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..errors import EXIT_OK, ConfigError
from ..records import RunResult
from .findings import Finding, Findings, collect_findings
from .fold import listed, noun_of
from .lines import say
from .markdown import plural

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "parallelize"
#: Where relative artifact URIs start: the repository root (code scanning's convention).
SRCROOT = "%SRCROOT%"

NO_FINDINGS = (
    "--format sarif: the result has no findings with a path and a line (use a recipe whose "
    "JSON merge reports them, such as --recipe code-review or review-aspects, or --format json)"
)


def sarif_text(result: RunResult, findings: Findings | None = None) -> str:
    """The SARIF log of a section run's findings; ConfigError (exit 2) when it has none.

    A run that failed (exit code other than 0) without findings gives "" and keeps its code."""
    if result.command != "section":
        raise ConfigError(
            f"--format sarif: `{result.command}` has no findings with locations (SARIF is for "
            "section runs whose JSON merge reports findings); use --format text or json"
        )
    if result.dry_run:
        raise ConfigError(
            "--format sarif: a dry run makes no findings (drop --dry-run, or see the plan "
            "with --format text or json)"
        )
    if result.failed:  # a partial log would close the alerts of the files never reviewed
        say(unreviewed_warning(result))
        return ""
    found = findings if findings is not None else collect_findings(result)
    if not found.items and (not found.arrays or found.unlocated):
        if result.exit_code != EXIT_OK:
            return ""
        raise ConfigError(NO_FINDINGS)
    return json.dumps(sarif_log(result, found), indent=2, ensure_ascii=False) + "\n"


def unreviewed_warning(result: RunResult) -> str:
    """Why no SARIF was written: how many chunks were not reviewed, and which (folded)."""
    failed = result.failed
    noun = noun_of(result)[id(failed[0])]
    labels = [r.task.label for r in failed]
    were = "was" if len(failed) == 1 else "were"
    return (
        f"warning: --format sarif: no SARIF written: {len(failed):,} of "
        f"{plural(len(result.results), noun)} {were} not reviewed ({listed(labels)}); uploaded, "
        "a partial log would close the code-scanning alerts of the files they hold (the summary "
        "says why they failed; a re-run reviews them)"
    )


def sarif_log(result: RunResult, findings: Findings) -> dict[str, Any]:
    """The SARIF 2.1.0 log object: $schema, version and one run of this tool."""
    items = findings.by_severity()
    groups = sorted({f.group for f in items})
    rules = [rule(result.recipe, group) for group in groups]
    index = {group: i for i, group in enumerate(groups)}
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "version": __version__,
                "rules": rules,
            }
        },
        # The category code scanning files these results under (one per recipe).
        "automationDetails": {"id": f"{TOOL_NAME}/{result.recipe}/"},
        "results": [sarif_result(f, rules[index[f.group]]["id"], index[f.group]) for f in items],
        "properties": {"model": result.model, "unlocatedFindings": findings.unlocated},
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def rule_id(recipe: str, group: str) -> str:
    """`code-review`, or `review-aspects/security` for the findings of one aspect."""
    return f"{recipe}/{group}" if group else recipe


def rule(recipe: str, group: str) -> dict[str, Any]:
    """A reportingDescriptor: the findings of one recipe (and aspect)."""
    what = f"the {group} part of the {recipe} recipe" if group else f"the {recipe} recipe"
    return {
        "id": rule_id(recipe, group),
        "name": rule_id(recipe, group).replace("/", "-"),
        "shortDescription": {"text": f"A finding of {what}"},
        "fullDescription": {"text": f"A problem an LLM reported when running {what}."},
        "defaultConfiguration": {"level": "warning"},
    }


def sarif_result(finding: Finding, rule_id: str, rule_index: int) -> dict[str, Any]:
    """One result: the finding's text, level, file and line."""
    properties: dict[str, Any] = {"severity": finding.severity or "unspecified"}
    if finding.fix:
        properties["fix"] = finding.fix
    return {
        "ruleId": rule_id,
        "ruleIndex": rule_index,
        "level": finding.level,
        "message": {"text": finding.text},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": artifact_location(finding.path),
                    "region": {"startLine": finding.line},
                }
            }
        ],
        "properties": properties,
    }


def artifact_location(path: str) -> dict[str, str]:
    """A repository-relative path as a URI under the repository root (findings.py keeps only
    those: a path outside the repository has no location)."""
    return {"uri": quote(path), "uriBaseId": SRCROOT}
