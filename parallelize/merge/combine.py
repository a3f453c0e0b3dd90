"""Combine ALL section outputs into one artifact: MERGERS maps a strategy name to a function.

`combine` is the entry point after the workers ran: it checks JSON answers (one repair each),
applies the guardrail gate, groups results per clone and aspect, then calls the merger.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_FAILED, EXIT_FLAGGED, EXIT_OK, combine_exit_codes
from ..inputs.tokens import get_counter
from ..plan.jsonmode import JsonCheck, JsonContract, RepairRoom, contract_for, enforce_json
from ..plan.window import context_window
from ..recipe.model import Recipe
from ..recipe.section import Aspect, Guard
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
from .files import by_file
from .guard import Verdict, screen_verdict
from .jsonmerge import JsonMerger, dumps_strict
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
    """Valid JSON answers merged per group (arrays concatenated, objects deep-merged, rules).

    The output is always one strict JSON document: a group whose every worker failed is an
    empty document of its schema's type (`{}` or `[]`), and no number JSON cannot carry is
    written (see jsonmerge.dumps_strict)."""
    recipe = context.recipe
    merger = JsonMerger(recipe.merge.rules, recipe.merge.dedupe_by)
    aspects = {a.name: a for a in recipe.aspects}
    docs: dict[tuple[str, str], Any] = {}
    for key, members in grouped(results).items():
        values = [context.values[r.task.index] for r in members if r.task.index in context.values]
        doc = merger.merge(values)
        docs[key] = _empty_document(recipe, aspects.get(key[1])) if doc is None else doc
    if len(docs) == 1:
        merged = next(iter(docs.values()))
    else:
        merged = {}
        for (clone, aspect), doc in docs.items():
            if clone and aspect:
                merged.setdefault(clone, {})[aspect] = doc
            else:
                merged[clone or aspect] = doc
    problems: list[str] = []
    text = dumps_strict(merged, problems) + "\n"
    warnings = merger.warnings() + problems
    return MergeOutcome(text, warnings=warnings, details={"merge": {"strategy": "json"}})


def _empty_document(recipe: Recipe, aspect: Aspect | None) -> Any:
    """What a group with no valid answer merges to: `[]` when its schema wants an array, else
    `{}`, so stdout stays one JSON document even when every worker failed."""
    contract = contract_for(recipe, aspect)
    schema = contract.schema if contract is not None else None
    return [] if isinstance(schema, Mapping) and schema.get("type") == "array" else {}


def merge_files(results: Sequence[TaskResult], context: MergeContext) -> MergeOutcome:
    """Every section to its own file under --out-dir (the parts of one split input into one
    file), a manifest, and the written paths."""
    writer = context.writer
    assert writer is not None, "run.plan_section checks that --merge files has --out-dir"
    writer.expect([r.task for r in results])
    for members in by_file(results).values():
        texts = _json_texts(members, context)
        for result in members:
            writer.write(result, text=texts.get(result.task.index))
    manifest = writer.write_manifest(results, recipe=context.recipe.name, model=context.model)
    written = [r for r in results if r.task.index in writer.written]
    paths = dict.fromkeys(r.task.section.out_path for r in written if r.task.section)
    lines = [writer.display(rel) for rel in paths if rel is not None]
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


def _json_texts(members: Sequence[TaskResult], context: MergeContext) -> dict[int, str]:
    """The text each JSON answer writes: its document, or, for the parts of one file, the
    parts' documents merged by the recipe's rules (first part), so the file is one document."""
    values = context.values
    if not any(r.task.index in values for r in members):
        return {}
    if len(members) == 1:
        return {members[0].task.index: dumps_strict(values[members[0].task.index])}
    merge = context.recipe.merge
    merged = JsonMerger(merge.rules, merge.dedupe_by).merge(
        [values[r.task.index] for r in members if r.task.index in values]
    )
    return {r.task.index: dumps_strict(merged) if n == 0 else "" for n, r in enumerate(members)}


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
    check = None
    if contracts:
        room = repair_room(context)
        check = enforce_json(results, contracts, context.executor, room=room)
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


def repair_room(context: MergeContext) -> RepairRoom:
    """The window and counter JSON repair calls must fit: the run's (as the workers were
    planned), else the recipe's window or the model's known one, and the model's counter."""
    window = context.window or context.recipe.context_window or context_window(context.model)
    return RepairRoom(window, context.counter or get_counter(context.model))


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
