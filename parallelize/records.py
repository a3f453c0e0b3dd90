"""Plain, frozen records that every layer passes along: requests, tasks, completions, results."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .reports import EngineReport, Estimate, InputsReport, VotePlan, VoteReport

Status = Literal["ok", "truncated", "failed", "skipped"]

#: finish_reason values that mean the model did not finish its answer.
TRUNCATING_FINISH_REASONS = frozenset({"length", "content_filter"})


@dataclass(frozen=True)
class Usage:
    """Token usage as reported by the API's `usage` object."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Of the prompt tokens, those the provider served from its prompt cache (billed lower).
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions call: model, messages and the parameters that shape the answer."""

    model: str
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Tells apart repeated identical requests (vote samples): part of the identity, never sent.
    sample: int = 0

    def body(self) -> dict[str, Any]:
        """The JSON body sent to `/chat/completions`."""
        return {"model": self.model, "messages": [dict(m) for m in self.messages], **self.params}


@dataclass(frozen=True)
class SectionSource:
    """What a section task was made from: its chunk, and its aspect and matrix clone if any."""

    chunk_id: str
    paths: tuple[str, ...]
    #: The chunk's input tokens (the tokenizer's count, once counted).
    tokens: int
    aspect: str | None = None
    #: The clone's matrix values and their joined name (None without a matrix).
    matrix: Mapping[str, str] | None = None
    clone: str = ""
    #: The answer must be a JSON document (a `merge: json` contract).
    json: bool = False
    #: Where `--merge files` writes the answer, relative to the output directory.
    out_path: str | None = None
    #: How many parts the chunk was sent in after the server refused it as too long.
    split: int | None = None

    def record(self) -> dict[str, Any]:
        """The task's fields in `--format json` (keys present only when they apply)."""
        out: dict[str, Any] = {
            "chunk_id": self.chunk_id,
            "paths": self.paths,
            "tokens": self.tokens,
        }
        if self.aspect is not None:
            out["aspect"] = self.aspect
        if self.matrix is not None:
            out |= {"clone": self.clone, "matrix": dict(self.matrix)}
        if self.json:
            out["format"] = "json"
        if self.out_path is not None:
            out["out_path"] = self.out_path
        if self.split is not None:
            out["split"] = self.split
        return out


@dataclass(frozen=True)
class ReduceSource:
    """A map-reduce merge call: which tree and level, and the chunk numbers it covers."""

    group: str
    level: int
    final: bool
    first: int
    last: int
    paths: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """The task's fields in `--format json`."""
        names = ("group", "level", "final", "first", "last", "paths")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class SampleSource:
    """One vote candidate: the model it was asked of and its attempt number."""

    model: str
    attempt: int

    def record(self) -> dict[str, Any]:
        """The task's fields in `--format json`."""
        return {"model": self.model, "attempt": self.attempt}


@dataclass(frozen=True)
class VerdictSource:
    """A judge round (with the candidate order it was shown) or a rubric score call."""

    kind: Literal["judge", "score"]
    round: int | None = None
    order: tuple[int, ...] | None = None

    def record(self) -> dict[str, Any]:
        """The task's fields in `--format json`."""
        if self.kind == "score":
            return {"kind": "score"}
        return {"kind": self.kind, "round": self.round, "order": list(self.order or ())}


TaskSource = SectionSource | ReduceSource | SampleSource | VerdictSource


@dataclass(frozen=True)
class Task:
    """One unit of identical work: a request plus what it was made from."""

    index: int
    label: str
    request: ChatRequest
    source: TaskSource | None = None

    @property
    def paths(self) -> tuple[str, ...]:
        """The input files this task's data came from (none for a vote)."""
        if isinstance(self.source, SectionSource | ReduceSource):
            return self.source.paths
        return ()

    @property
    def section(self) -> SectionSource | None:
        """The section this task works on, when it is a section task."""
        return self.source if isinstance(self.source, SectionSource) else None

    def record(self) -> dict[str, Any]:
        """The fields of its source, as `--format json` shows them."""
        return self.source.record() if self.source is not None else {}


@dataclass(frozen=True)
class ToolCall:
    """One tool the model asked to run: the call's id, the tool's name, its JSON arguments."""

    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        """The call in the chat-completions wire shape (what the cache stores)."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call a worker made, as `--format json` shows it (`tasks[].tool_calls[]`)."""

    name: str
    #: The parsed arguments, or the model's text when it was not a JSON object.
    arguments: Mapping[str, Any] | str
    ok: bool
    error: str | None
    duration_s: float
    bytes: int

    def record(self) -> dict[str, Any]:
        """The call's JSON fields."""
        arguments = dict(self.arguments) if isinstance(self.arguments, Mapping) else self.arguments
        return {
            "name": self.name,
            "arguments": arguments,
            "ok": self.ok,
            "error": self.error,
            "duration_s": round(self.duration_s, 3),
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class Completion:
    """What one successful call returned."""

    text: str
    finish_reason: str | None
    usage: Usage
    model: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    latency: float = 0.0
    cached: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    #: What was odd about the reply but did not fail it (e.g. usage figures ignored).
    warnings: tuple[str, ...] = ()

    @property
    def truncated(self) -> bool:
        """True when the answer is cut short or empty, so it must not pass as complete."""
        if self.finish_reason in TRUNCATING_FINISH_REASONS:
            return True
        return not self.text.strip() and not self.tool_calls


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task: a completion, or the error that ended it."""

    task: Task
    completion: Completion | None = None
    error: str | None = None
    attempts: int = 0
    #: The server refused the request as longer than its context window (the run may split it).
    overflow: bool = False
    #: Wall seconds from a worker taking the task to its result, retries and waits included
    #: (0 for a cache hit or a call never started): the report's timings.
    duration: float = 0.0
    #: The tools the worker called on the way to its answer, round by round.
    tool_calls: tuple[ToolCallRecord, ...] = ()

    @property
    def status(self) -> Status:
        if self.completion is None:
            return "skipped" if self.attempts == 0 else "failed"
        return "truncated" if self.completion.truncated else "ok"

    @property
    def text(self) -> str:
        return self.completion.text if self.completion else ""

    @property
    def usage(self) -> Usage:
        return self.completion.usage if self.completion and not self.completion.cached else Usage()

    @property
    def succeeded(self) -> bool:
        return self.completion is not None


class FrozenDict(dict[str, Any]):
    """A dict that refuses changes: `RunResult.details` is built from the typed parts, so a
    change to it would be lost (a dict, so that it stays JSON-serialisable)."""

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("RunResult.details is read-only: change the typed part instead")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]


@dataclass
class RunResult:
    """Everything a command produced; the renderer prints it and the CLI maps it to an exit code.

    The typed parts say what each stage reported; `details` is the same as one read-only mapping
    (the top-level keys of `--format json` after the common ones).
    """

    command: str
    recipe: str
    model: str
    tasks: list[Task]
    results: list[TaskResult] = field(default_factory=list)
    output: str = ""
    aggregate_calls: list[TaskResult] = field(default_factory=list)
    wall_time: float = 0.0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    exit_code: int = 0
    #: A section run's inputs, and its merge's own record (keys vary by strategy: merge, json,
    #: guard).
    inputs: InputsReport | None = None
    merge: Mapping[str, Any] = field(default_factory=dict)
    vote: VoteReport | VotePlan | None = None
    #: A dry run's estimate.
    estimate: Estimate | None = None
    engine: EngineReport | None = None

    @property
    def details(self) -> Mapping[str, Any]:
        """Every part's record, in the order `--format json` shows them."""
        out: dict[str, Any] = {}
        if self.inputs is not None:
            out |= self.inputs.record()
        out |= self.merge
        if self.vote is not None:
            out |= self.vote.record()
        if self.estimate is not None:
            out["estimate"] = dataclasses.asdict(self.estimate)
        if self.engine is not None:
            out |= self.engine.record()
        return FrozenDict(out)

    @property
    def all_calls(self) -> list[TaskResult]:
        return [*self.results, *self.aggregate_calls]

    @property
    def usage(self) -> Usage:
        total = Usage()
        for result in self.all_calls:
            total += result.usage
        return total

    @property
    def failed(self) -> list[TaskResult]:
        return [r for r in self.results if not r.succeeded]

    @property
    def truncated(self) -> list[TaskResult]:
        return [r for r in self.all_calls if r.status == "truncated"]


#: "tools": a worker's tool calls started (the message says which, and how many are in flight).
EventKind = Literal["queued", "start", "retry", "tools", "done", "failed"]


@dataclass(frozen=True)
class Event:
    """A progress notification from a worker thread."""

    kind: EventKind
    task: Task
    result: TaskResult | None = None
    message: str = ""


ProgressCallback = Callable[[Event], None]


Notice = Callable[[str], None]
