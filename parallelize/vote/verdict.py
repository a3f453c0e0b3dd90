"""Ask models for small JSON verdicts in parallel, validate them, and retry an unusable one once.

Used by the judge (a winning label) and the rubric scorer (scores per criterion). A retry is a
new request: the unusable reply plus a note saying what was wrong, so a cache never serves the
same bad answer back and the model gets a chance to correct itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from ..engine.executor import Executor
from ..plan.jsonreply import JSONReplyError, parse_json_object
from ..records import ChatRequest, Task, TaskResult

T = TypeVar("T")

RETRY_NOTE = (
    "Your reply could not be used: {problem}. Reply again with only the JSON object described "
    "above, and nothing else."
)


class VerdictError(ValueError):
    """A reply that parsed as JSON but does not follow the schema."""


@dataclass
class Verdict(Generic[T]):
    """The validated value of one question (None when unusable), the calls it took, the problem."""

    value: T | None
    calls: list[TaskResult] = field(default_factory=list)
    problem: str | None = None


def ask_json(
    executor: Executor, tasks: Sequence[Task], validate: Callable[[dict], T]
) -> list[Verdict[T]]:
    """Run every question in parallel, then retry the unusable ones once, also in parallel."""
    first = executor.run(list(tasks))
    verdicts = [_read(result, validate) for result in first]
    again = [i for i, verdict in enumerate(verdicts) if verdict.value is None]
    if again:
        retries = executor.run([retry_task(first[i], verdicts[i].problem) for i in again])
        for i, result in zip(again, retries, strict=True):
            verdict = _read(result, validate)
            verdicts[i] = Verdict(verdict.value, [first[i], result], verdict.problem)
    return verdicts


def retry_task(result: TaskResult, problem: str | None) -> Task:
    """The follow-up question for an unusable answer (the same one after a transport failure)."""
    task = result.task
    if not result.succeeded:
        return replace(task, label=f"{task.label} (retry)")
    note = RETRY_NOTE.format(problem=problem or "it did not follow the schema")
    messages = (
        *task.request.messages,
        {"role": "assistant", "content": result.text},
        {"role": "user", "content": note},
    )
    request = ChatRequest(
        task.request.model, messages, task.request.params, sample=task.request.sample
    )
    return replace(task, label=f"{task.label} (retry)", request=request)


def _read(result: TaskResult, validate: Callable[[dict], T]) -> Verdict[T]:
    if not result.succeeded:
        return Verdict(None, [result], f"the call failed: {result.error}")
    try:
        return Verdict(validate(parse_json_object(result.text)), [result])
    except (JSONReplyError, VerdictError) as exc:
        return Verdict(None, [result], str(exc))
