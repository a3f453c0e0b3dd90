"""A dry run's plan, as text on stdout: the tasks, their files and tokens, the first prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import first_few
from ..records import RunResult
from ..reports import VotePlan
from .terminal import masked, sizing, usd


def plan_text(result: RunResult) -> str:
    """A dry run's plan: chunks, files, token counts, redactions and the first rendered prompt."""
    if result.command == "vote":
        return vote_plan_text(result)
    inputs = result.inputs
    lines = [
        f"plan: {len(result.tasks)} {result.command} task(s), recipe {result.recipe}, "
        f"model {result.model or '(endpoint default)'}, tokens counted with "
        f"{inputs.counter if inputs else '?'}"
    ]
    if inputs:
        lines.append(f"inputs: {inputs.summary}")
        if inputs.context_window:
            lines.append(f"sizing: {sizing(inputs)}")
    planned = result.estimate
    if planned:
        cost = (
            "no price known"
            if planned.cost is None
            else f"about {usd(planned.cost)} (no prompt-cache discount assumed)"
        )
        lines.append(
            f"estimate: {planned.input_tokens:,} tokens in, up to "
            f"{planned.output_tokens:,} out (at max_tokens): {cost}"
        )
    lines.extend(reduce_plan_lines(result.merge.get("reduce_plan")))
    for task in result.tasks:
        shown = first_few(task.paths, 5)
        section = task.section
        size = f"{section.tokens:,} tokens" if section else ""
        target = f" -> {section.out_path}" if section and section.out_path is not None else ""
        lines.append(f"  {task.label}: {size} {shown}".rstrip() + target)
    if inputs and inputs.secrets:
        lines.append("secrets redacted before sending (values masked):")
        lines.extend(f"  {masked(found)}" for found in inputs.secrets)
    if result.tasks:
        first = result.tasks[0].request
        lines.append("")
        lines.append(f"--- rendered prompt of {result.tasks[0].label} ---")
        for message in first.messages:
            lines.append(f"[{message['role']}]")
            lines.append(str(message["content"]))
    return "\n".join(lines) + "\n"


def vote_plan_text(result: RunResult) -> str:
    """A vote's dry run: the candidate requests, then the judge or scorer calls that follow."""
    vote = result.vote
    assert isinstance(vote, VotePlan), "a vote's dry run carries its VotePlan"
    planned = vote.planned_calls
    lines = [
        f"plan: vote with {len(result.tasks)} candidate(s), strategy {vote.strategy}, "
        f"recipe {result.recipe}, seed {vote.seed}"
    ]
    for call in planned:
        lines.append(f"  {call['count']} x {call['kind']} on {call['model']}")
    retries = sum(c["count"] for c in planned if "retry" in c["kind"])
    total = sum(c["count"] for c in planned)
    lines.append(
        f"  at most {total} calls" + (f" ({total - retries} without retries)" if retries else "")
    )
    for task in result.tasks:
        params = ", ".join(f"{k}={v}" for k, v in task.request.params.items())
        lines.append(f"  {task.label}: {task.request.model} sample {task.request.sample} {params}")
    if result.tasks:
        lines += ["", "--- rendered prompt of every candidate ---"]
        for message in result.tasks[0].request.messages:
            lines += [f"[{message['role']}]", str(message["content"])]
    return "\n".join(lines) + "\n"


def reduce_plan_lines(plan: Mapping[str, Any] | None) -> list[str]:
    """The map-reduce tree a `--merge llm` dry run plans, level by level, at worst."""
    if not plan:
        return []
    window = (
        f"context window {plan['context_window']:,} tokens (from {plan['context_window_source']})"
    )
    if "error" in plan:
        return [f"reduce plan: {window}; at worst it does not converge: {plan['error']}"]
    levels = plan["levels"]
    lines = [
        f"reduce plan: at most {plan['calls']} reduce call(s) in {len(levels)} level(s) "
        f"(merge.max_depth {plan['max_depth']}), {window}"
    ]
    for number, level in enumerate(levels, start=1):
        kind = "final answer" if level["final"] else "output"
        lines.append(
            f"  level {number}: {level['calls']} call(s) reading {level['parts']} part(s), "
            f"{kind} capped at {level['max_tokens']:,} tokens"
        )
    return lines
