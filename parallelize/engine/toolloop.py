"""The tool loop inside one worker: ask, run the reply's tool calls at once, ask again.

Each round is one ordinary call (pacing, retries, budget, deadline and cost apply to it) and is
cached under its own request, whose messages hold every earlier round and whose params hold the
tool definitions: a deterministic loop replays from the cache with no request, and a loop cut
short resumes at the first round it had not finished. All calls of one reply run at once on the
run's tool pool; their `tool` messages follow in the model's order. At `max_tool_rounds`, or when
a round repeats the previous round's calls exactly, one last request with `tool_choice: none`
asks for the answer, with a warning; a server that answers it with tool calls anyway (it ignored
or dropped tool_choice) is asked once more without tools, and tool calls then fail the task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import CacheError
from ..records import (
    Completion,
    Event,
    SampleSource,
    SectionSource,
    Task,
    TaskResult,
    ToolCallRecord,
    Usage,
)
from .cache import request_key
from .reply import NO_TOOLS

if TYPE_CHECKING:
    from ..tools.kit import Answered, ToolKit
    from .executor import Executor

#: What each warning says, once per run.
ROUND_LIMIT = (
    "a worker reached max_tool_rounds ({rounds}): its answer was asked for without tools "
    "(raise max_tool_rounds or --max-tool-rounds if it needs more)"
)
STILL_CALLING = (
    "still calling tools after max_tool_rounds ({rounds}): the server ignored tool_choice "
    '"none" and a request without tools; raise --max-tool-rounds or use a server that honours it'
)
#: The request keys that offer tools; the fallback last round sends none of them.
TOOL_PARAMS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
REPEATED = (
    "a worker repeated its previous tool calls exactly: its answer was asked for without tools"
)


def offers_tools(task: Task) -> bool:
    """Tools go to worker calls (section chunks) and vote candidates only: never to merge,
    judge or screen calls."""
    return isinstance(task.source, SectionSource | SampleSource)


class ToolLoop:
    """Runs a task's rounds through the executor's own call path."""

    def __init__(self, kit: ToolKit) -> None:
        self.kit = kit
        self.offers = kit.offers()

    def run(
        self, executor: Executor, task: Task, send: Callable[[Task, str | None], TaskResult]
    ) -> TaskResult:
        """The task's result after its tool rounds; `send` makes one call (with retries)."""
        messages: list[dict[str, Any]] = [dict(m) for m in task.request.messages]
        params = {**task.request.params, "tools": self.offers, "parallel_tool_calls": True}
        records: list[ToolCallRecord] = []
        usage, attempts, cached = Usage(), 0, True
        previous: list[tuple[str, str]] | None = None
        last, spent = False, 0  # spent: bytes of tool results sent back so far
        for round_number in range(self.kit.max_rounds + 1):
            last = last or round_number == self.kit.max_rounds
            asked = params | {"tool_choice": "none"} if last else params
            request = replace(task.request, messages=tuple(messages), params=asked)
            result = self._round(executor, replace(task, request=request), send)
            attempts += result.attempts
            completion = result.completion
            if completion is None:
                return replace(result, task=task, attempts=attempts, tool_calls=tuple(records))
            cached = cached and completion.cached
            usage += Usage() if completion.cached else completion.usage
            calls = completion.tool_calls
            if not calls or last:
                break
            called = [(c.name, c.arguments) for c in calls]
            if called == previous:  # the same calls again: they would answer the same
                executor.warn(REPEATED)
                last = True
                continue
            previous = called
            answered = self._run_calls(executor, task, completion, spent)
            spent += sum(len(a.content.encode("utf-8", "surrogatepass")) for a in answered)
            records.extend(a.record for a in answered)
            messages.append(_assistant(completion))
            messages.extend(_tool_message(a) for a in answered)
            if round_number + 1 == self.kit.max_rounds:
                executor.warn(ROUND_LIMIT.format(rounds=self.kit.max_rounds))
        if completion.tool_calls:  # tool_choice "none" ignored or dropped: ask without tools
            bare = {k: v for k, v in params.items() if k not in TOOL_PARAMS}
            request = replace(task.request, messages=tuple(messages), params=bare)
            result = self._round(executor, replace(task, request=request), send)
            attempts += result.attempts
            if result.completion is None or result.completion.tool_calls:
                error = result.error or ""
                if result.completion is not None or NO_TOOLS in error:
                    error = STILL_CALLING.format(rounds=self.kit.max_rounds)
                return replace(
                    result,
                    task=task,
                    completion=None,
                    error=error,
                    attempts=attempts,
                    tool_calls=tuple(records),
                )
            completion = result.completion
            cached = cached and completion.cached
            usage += Usage() if completion.cached else completion.usage
        final = replace(completion, usage=usage, cached=cached)
        return TaskResult(task, final, attempts=attempts, tool_calls=tuple(records))

    def _round(
        self, executor: Executor, task: Task, send: Callable[[Task, str | None], TaskResult]
    ) -> TaskResult:
        """One round: from the cache when its request was answered before, else a call."""
        cache, key = executor.cache, None
        if cache is not None:
            endpoint = executor.client.endpoint_for(task.request)
            key = request_key(endpoint.base_url, task.request, api_version=endpoint.api_version)
            if not executor.refresh:
                try:
                    hit = cache.get_many([key]).get(key)
                except CacheError:
                    hit = None
                if hit is not None:
                    executor.count_cached(task, hit)
                    return TaskResult(task, hit, attempts=0)
        return send(task, key)

    def _run_calls(
        self, executor: Executor, task: Task, completion: Completion, spent: int
    ) -> list[Answered]:
        calls = completion.tool_calls
        names = tool_names([c.name for c in calls])

        def started(in_flight: int) -> None:
            count = f"{len(calls)} tool call{'s' if len(calls) != 1 else ''}"
            message = f"{count} ({names}); {in_flight} in flight"
            executor.on_event(Event("tools", task, message=message))

        return self.kit.run_calls(calls, on_start=started, spent=spent)


#: Distinct tool names a progress line shows, and the characters of each (a model may invent
#: a long name; the line stays one line).
SHOWN_NAMES = 5
NAME_CHARS = 40


def tool_names(names: list[str]) -> str:
    """`read_file x13, search x3`: each name once with its count, most called first, bounded."""
    counts = Counter(names)
    shown = [
        name[:NAME_CHARS] + (f" x{count}" if count > 1 else "")
        for name, count in counts.most_common(SHOWN_NAMES)
    ]
    more = len(counts) - SHOWN_NAMES
    return ", ".join(shown) + (f", {more} more" if more > 0 else "")


def _assistant(completion: Completion) -> dict[str, Any]:
    """The model's tool-calling reply as the next request's assistant message."""
    return {
        "role": "assistant",
        "content": completion.text or None,
        "tool_calls": [c.openai() for c in completion.tool_calls],
    }


def _tool_message(answered: Answered) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": answered.call.id, "content": answered.content}
