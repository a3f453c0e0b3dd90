"""Combine ALL section outputs into one artifact: MERGERS maps a strategy name to a function.

`combine` is the entry point after the workers ran: it checks JSON answers (one repair each),
applies the guardrail gate, groups results per clone and aspect, then calls the merger.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_FAILED, EXIT_FLAGGED, EXIT_OK, combine_exit_codes
from ..plan.jsonmode import JsonCheck, JsonContract, contract_for, enforce_json
from ..recipe.model import Recipe
from ..recipe.section import Guard
from ..records import TaskResult
from .context import (
    MergeContext,
    MergeOutcome,
    group_key,
    group_name,
    grouped,
    section_header,
    titled,
)
from .guard import Verdict, screen_verdict
from .jsonmerge import JsonMerger
from .mapreduce import DEFAULT_MERGE_PROMPT, MERGE_VARIABLES, parts_of, reduce_groups

if TYPE_CHECKING:
    pass

__all__ = ["DEFAULT_MERGE_PROMPT", "MERGERS", "MERGE_VARIABLES", "MergeContext", "combine"]

#: What a withheld answer reads as in --format json and anywhere else results are shown.
WITHHELD = "[withheld: flagged by the guardrail]"


def merge_concat(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """Outputs in chunk order, each under a header naming its chunk and files, per group."""
    texts = {}
    for key, members in grouped(results).items():
        blocks = [f"{section_header(r)}\n\n{r.text.strip()}" for r in members if r.succeeded]
        texts[key] = "\n\n".join(blocks) + "\n" if blocks else ""
    return MergeOutcome(titled(texts) if texts else "")


def merge_llm(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """Hierarchical map-reduce per group: batches that fit the reduce model, level by level."""
    groups = {}
    for key, members in grouped(results).items():
        numbered = [(r, n) for n, r in enumerate(members, start=1) if r.succeeded]
        groups[group_name(key)] = parts_of([r for r, _ in numbered], [n for _, n in numbered])
    if not any(groups.values()):
        return MergeOutcome("")
    report = reduce_groups(groups, context)
    keys = {group_name(key): key for key in grouped(results)}
    texts = {keys[name]: text for name, text in report.texts.items()}
    details = {
        "strategy": "llm",
        "depth": report.depth,
        "calls": len(report.calls),
        "levels": report.levels,
    }
    return MergeOutcome(
        titled(texts),
        report.calls,
        warnings=report.warnings,
        details={"merge": details},
        exit_code=report.exit_code,
    )


def merge_json(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """Valid JSON answers merged per group (arrays concatenated, objects deep-merged, rules)."""
    merge = context.recipe.merge
    merger = JsonMerger(merge.rules, merge.dedupe_by)
    docs: dict[tuple[str, str], Any] = {}
    for key, members in grouped(results).items():
        values = [context.values[r.task.index] for r in members if r.task.index in context.values]
        docs[key] = merger.merge(values)
    if not any(v is not None for v in docs.values()):
        return MergeOutcome("", warnings=merger.warnings())
    if len(docs) == 1:
        merged = next(iter(docs.values()))
    else:
        merged = {}
        for (clone, aspect), doc in docs.items():
            if clone and aspect:
                merged.setdefault(clone, {})[aspect] = doc
            else:
                merged[clone or aspect] = doc
    text = json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
    return MergeOutcome(text, warnings=merger.warnings(), details={"merge": {"strategy": "json"}})


def merge_files(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """Every section to its own file under --out-dir, a manifest, and the written paths."""
    writer = context.writer
    assert writer is not None, "run.plan_section checks that --merge files has --out-dir"
    for result in results:
        if result.task.index in context.values:
            text = json.dumps(context.values[result.task.index], indent=2, ensure_ascii=False)
            writer.write(result, text=text)
        else:
            writer.write(result)
    manifest = writer.write_manifest(results, recipe=context.recipe.name, model=context.model)
    written = [r for r in results if r.task.index in writer.written]
    lines = [writer.display(r.task.section.out_path) for r in written if r.task.section]
    missing = len(results) - len(written)
    details = {
        "strategy": "files",
        "out_dir": str(writer.root),
        "written": len(written),
        "not_written": missing,
        "manifest": str(manifest),
    }
    warnings = [f"{missing} section(s) not written; see {manifest}"] if missing else []
    return MergeOutcome(
        "\n".join(lines) + "\n" if lines else "",
        warnings=warnings,
        details={"merge": details},
        exit_code=EXIT_FAILED if missing else EXIT_OK,
    )


Merger = Callable[[Sequence[TaskResult], MergeContext], MergeOutcome]

MERGERS: dict[str, Merger] = {
    "concat": merge_concat,
    "llm": merge_llm,
    "json": merge_json,
    "files": merge_files,
}


def json_contracts(recipe: Recipe, results: Sequence[TaskResult]) -> dict[int, JsonContract]:
    """The JSON contract of every task that has one, by task index."""
    aspects = {a.name: a for a in recipe.aspects}
    contracts = {}
    for result in results:
        contract = contract_for(recipe, aspects.get(group_key(result)[1]))
        if contract is not None:
            contracts[result.task.index] = contract
    return contracts


def combine(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """Check JSON answers, apply the guardrail gate, then merge with the recipe's strategy."""
    recipe = context.recipe
    contracts = json_contracts(recipe, results)
    check = enforce_json(results, contracts, context.executor) if contracts else None
    checked = check.results if check else list(results)
    context = replace(context, values=check.values if check else {})
    merger = MERGERS[recipe.merge.strategy]
    if recipe.guard is None:
        outcome = merger(checked, context)
    else:
        outcome = _guarded(checked, context, merger, recipe.guard)
    outcome.results = outcome.results or checked
    if check is not None:
        outcome.details["json"] = check.details()
        outcome.warnings += _invalid_warnings(check)
        outcome.exit_code = combine_exit_codes(outcome.exit_code, check.exit_code)
    return outcome


def _guarded(
    results: list[TaskResult], context: MergeContext, merger: Merger, guard: Guard
) -> MergeOutcome:
    """Release each clone's answer only when its own screens cleared it; a flagged clone's
    answer is held back (exit 4). Clones share nothing, so neither does their gate."""
    verdicts = {
        clone: screen_verdict(
            [r for r in results if _clone(r) == clone and _screens(r, guard)],
            context.values,
            guard,
        )
        for clone in dict.fromkeys(_clone(r) for r in results)
    }
    flagged = {clone for clone, verdict in verdicts.items() if verdict.flagged}
    answers = [r for r in results if not _screens(r, guard)]
    released = [r for r in answers if _clone(r) not in flagged]
    details = _gate_details(verdicts)
    if not released:
        held = {id(r) for r in answers}
        kept = [_withheld(r) if id(r) in held else r for r in results]
        return MergeOutcome("", details={"guard": details}, exit_code=EXIT_FLAGGED, results=kept)
    if merger is merge_concat and len(released) == 1:
        text = released[0].text if released[0].succeeded else ""
        outcome = MergeOutcome(text if text.endswith("\n") or not text else text + "\n")
    else:
        outcome = merger(released, context)
    outcome.details["guard"] = details
    if flagged:
        outcome.exit_code = combine_exit_codes(outcome.exit_code, EXIT_FLAGGED)
        outcome.results = [
            _withheld(r) if _clone(r) in flagged and not _screens(r, guard) else r for r in results
        ]
    return outcome


def _clone(result: TaskResult) -> str:
    return group_key(result)[0]


def _screens(result: TaskResult, guard: Guard) -> bool:
    return group_key(result)[1] == guard.aspect


def _gate_details(verdicts: Mapping[str, Verdict]) -> dict[str, Any]:
    """One verdict as is; per clone, the flagged clones named in the reason and listed."""
    if list(verdicts) == [""]:
        return verdicts[""].details()
    flagged = [clone for clone, verdict in verdicts.items() if verdict.flagged]
    return {
        "flagged": bool(flagged),
        "reason": "; ".join(f"{clone}: {verdicts[clone].reason}" for clone in flagged),
        "screen_failed": any(v.screen_failed for v in verdicts.values()),
        "withheld": flagged,
        "clones": {clone: verdict.details() for clone, verdict in verdicts.items()},
    }


def _withheld(result: TaskResult) -> TaskResult:
    """An answer the gate held back: its usage stays, its text does not reach any output."""
    if result.completion is None:
        return result
    return replace(result, completion=replace(result.completion, text=WITHHELD))


def _invalid_warnings(check: JsonCheck) -> list[str]:
    warnings = [f"the JSON repair calls cannot work: {check.fatal}"] if check.fatal else []
    if check.invalid:
        warnings.append(
            f"{check.invalid} answer(s) stayed invalid JSON after one repair and count as failed"
        )
    return warnings
