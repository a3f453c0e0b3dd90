"""Workers that must answer JSON: ask for it, check every answer, give a bad one one repair.

The endpoint's JSON mode (or structured outputs when a schema is known) is requested; an endpoint
that rejects the parameter gets instructions only (client.PARAM_ADAPTATIONS drops it). Either way
every answer is parsed and validated here, because no server's promise is taken on trust.

A repair call echoes the chunk, the bad answer and the error, so it is larger than the call that
fit: it is measured with the run's token counter against the run's context window
(`RepairRoom`), and what it echoes is cut until it fits with the answer's max_tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, FatalLLMError, RecipeError
from ..inputs.tokens import ESTIMATE, TokenCounter
from ..records import ChatRequest, Task, TaskResult, Usage
from .jsonreply import JSONReplyError, parse_json_reply

if TYPE_CHECKING:
    from ..engine.executor import Executor
    from ..recipe.model import Recipe
    from ..recipe.section import Aspect

#: The name structured outputs require for a schema (letters, digits, _ and -).
SCHEMA_NAME = "answer"

REPAIR_PROMPT = """\
Your previous reply could not be used: {problem}.
Reply again with only the corrected JSON document: no explanation, no code fence."""

#: Said when the answer ran out of max_tokens: a shorter answer is the only fix.
CUT_OFF = "your reply was cut off at the output limit, so answer more briefly"
#: The error is echoed up to this many characters (a schema error may quote a whole value).
MAX_PROBLEM_CHARS = 600
#: Output tokens kept for a repair whose request sets no max_tokens (as the planner keeps).
DEFAULT_RESERVE = 1_024
#: Tokens kept free besides the answer, as the planner does (chat-template rounding).
REQUEST_SLACK = 8
#: Measure-and-cut rounds before a repair that still does not fit is given up.
FIT_ROUNDS = 6


@dataclass(frozen=True)
class JsonContract:
    """What a worker's JSON answer must be: any JSON document, or one matching a schema."""

    schema: Mapping[str, Any] | None = None
    where: str = "merge.schema"

    def response_format(self) -> dict[str, Any]:
        """The `response_format` request field: structured outputs with a schema, else JSON mode."""
        if self.schema is None:
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": dict(self.schema), "strict": False},
        }

    def instructions(self) -> str:
        """Appended to every prompt: servers without JSON mode (and OpenAI's, which wants the
        word JSON in the messages) still get told."""
        text = "Answer with one JSON document only: no explanation before or after it."
        if self.schema is not None:
            text += " It must match this JSON Schema:\n" + json.dumps(self.schema, indent=1)
        return text

    def check_schema(self) -> None:
        """Fail before any request when the schema itself is not a valid JSON Schema."""
        if self.schema is None:
            return
        from jsonschema import SchemaError, validators

        try:
            validators.validator_for(self.schema).check_schema(self.schema)
        except SchemaError as exc:
            raise RecipeError(f"{self.where}: not a valid JSON Schema: {exc.message}") from None

    def parse(self, text: str) -> Any:
        """The reply's JSON value; JSONReplyError says what is wrong (for the repair prompt)."""
        value = parse_json_reply(text)
        if self.schema is not None:
            from jsonschema import validators
            from jsonschema.exceptions import best_match

            validator = validators.validator_for(self.schema)(self.schema)
            error = best_match(validator.iter_errors(value))
            if error is not None:
                where = error.json_path if error.absolute_path else "the document"
                raise JSONReplyError(f"{where} does not match the schema: {error.message}")
        return value


def guard_schema(flag: str, reason: str) -> dict[str, Any]:
    """The screen's verdict when the recipe declares none: a boolean flag and a reason."""
    return {
        "type": "object",
        "properties": {flag: {"type": "boolean"}, reason: {"type": "string"}},
        "required": [flag, reason],
    }


def contract_for(recipe: Recipe, aspect: Aspect | None) -> JsonContract | None:
    """The JSON contract of one aspect's workers, or None when they answer free text."""
    guard = recipe.guard
    if aspect is not None and aspect.json_schema is not None:
        return JsonContract(aspect.json_schema, where=f"aspects.{aspect.name}.schema")
    if aspect is not None and guard is not None and aspect.name == guard.aspect:
        return JsonContract(guard_schema(guard.flag, guard.reason), where="guard")
    if recipe.merge.json_schema is not None:
        return JsonContract(recipe.merge.json_schema)
    if recipe.merge.strategy == "json":
        return JsonContract(None)
    return None


@dataclass(frozen=True)
class RepairRoom:
    """The run's context window and token counter, which every repair call must fit."""

    window: int
    counter: TokenCounter

    def limit(self, request: ChatRequest) -> int:
        """Tokens the repair's messages may take: the window less the answer and slack (and
        the counter's margin, as the planner keeps it)."""
        usable = int(self.window * (1 - self.counter.margin))
        return usable - reserve_of(request) - REQUEST_SLACK


def reserve_of(request: ChatRequest) -> int:
    """The output tokens a request keeps for its answer."""
    params = request.params
    value = params.get("max_tokens") or params.get("max_completion_tokens")
    return value if isinstance(value, int) and value > 0 else DEFAULT_RESERVE


@dataclass(frozen=True)
class CheckedResult(TaskResult):
    """A result whose JSON needed a repair call: it carries both calls' usage."""

    spent: Usage = field(default_factory=Usage)
    repaired: bool = False

    @property
    def usage(self) -> Usage:
        return self.spent


@dataclass
class JsonCheck:
    """Results after checking (failed where the JSON stayed bad) and each valid value by index."""

    results: list[TaskResult]
    values: dict[int, Any] = field(default_factory=dict)
    repaired: int = 0
    invalid: int = 0
    #: The repair calls hit an error no retry helps (exit 2); the other answers still count.
    exit_code: int = EXIT_OK
    fatal: str | None = None

    def details(self) -> dict[str, int]:
        checked = len(self.values) + self.invalid
        return {"checked": checked, "repaired": self.repaired, "invalid": self.invalid}


def enforce_json(
    results: Sequence[TaskResult],
    contracts: Mapping[int, JsonContract],
    executor: Executor,
    *,
    room: RepairRoom | None = None,
) -> JsonCheck:
    """Validate every JSON answer; run one repair call for each bad one (in parallel).

    Each repair fits `room` (the run's window and counter); without it, nothing is cut."""
    check = JsonCheck(list(results))
    problems: dict[int, str] = {}
    for position, result in enumerate(results):
        contract = contracts.get(result.task.index)
        if contract is None or not result.succeeded:
            continue
        try:
            check.values[result.task.index] = contract.parse(result.text)
        except JSONReplyError as exc:
            problems[position] = str(exc)
    if not problems:
        return check
    planned = {p: repair_task(results[p], problem, room=room) for p, problem in problems.items()}
    repairs = [task for task in planned.values() if task is not None]
    try:
        ran = executor.run(repairs)
    except FatalLLMError as exc:  # no retry helps: the repairs fail, the rest is kept
        check.exit_code, check.fatal = exc.exit_code, str(exc)
        ran = [TaskResult(task, error=str(exc)) for task in repairs]
    finished = iter(ran)
    done = [
        next(finished) if task is not None else TaskResult(results[p].task, error=NO_ROOM)
        for p, task in planned.items()
    ]
    for position, repair in zip(problems, done, strict=True):
        first = results[position]
        contract = contracts[first.task.index]
        spent = first.usage + repair.usage
        attempts = first.attempts + repair.attempts
        duration = first.duration + repair.duration
        problem = problems[position]
        if repair.succeeded:
            try:
                check.values[first.task.index] = contract.parse(repair.text)
            except JSONReplyError as exc:
                problem = str(exc)
            else:
                check.repaired += 1
                check.results[position] = CheckedResult(
                    first.task,
                    repair.completion,
                    attempts=attempts,
                    spent=spent,
                    repaired=True,
                    duration=duration,
                )
                continue
        else:
            problem = f"{problem}; the repair call failed: {repair.error}"
        check.invalid += 1
        error = f"invalid JSON after one repair: {problem}"
        check.results[position] = CheckedResult(
            first.task, None, error=error, attempts=attempts, spent=spent, duration=duration
        )
    return check


#: Why a repair was not sent: even with its echoes cut it would not fit the window.
NO_ROOM = "not sent: it does not fit the context window even with the echoed text cut"


def repair_task(result: TaskResult, problem: str, *, room: RepairRoom | None = None) -> Task | None:
    """The same conversation plus the bad answer and the parse error: one chance to fix it.

    The echoed answer is cut first (its head is kept), then the middle of the chunk, at line
    boundaries so every framed line stays as escaped; None when nothing makes it fit."""
    request = result.task.request
    if result.status == "truncated":
        problem = f"{problem}; {CUT_OFF}"
    if len(problem) > MAX_PROBLEM_CHARS:
        problem = problem[: MAX_PROBLEM_CHARS - 3] + "..."
    if room is None:
        messages = _fitted(request.messages, result.text, problem, ESTIMATE, None)
    else:
        messages = _fitted(
            request.messages, result.text, problem, room.counter, room.limit(request)
        )
    if messages is None:
        return None
    repaired = ChatRequest(request.model, messages, request.params, request.sample)
    return Task(result.task.index, f"{result.task.label} (repair)", repaired, result.task.source)


Conversation = tuple[Mapping[str, Any], ...]


def _fitted(
    original: Conversation, answer: str, problem: str, counter: TokenCounter, limit: int | None
) -> Conversation | None:
    """The repair conversation cut until the counter says it fits `limit` (None: no limit),
    or None when it cannot."""
    chunk_at = max((i for i, m in enumerate(original) if m.get("role") == "user"), default=-1)
    chunk = str(original[chunk_at].get("content") or "") if chunk_at >= 0 else ""
    prompt = REPAIR_PROMPT.format(problem=problem)

    def build(chunk_text: str, answer_text: str) -> Conversation:
        messages = list(original)
        if chunk_at >= 0:
            messages[chunk_at] = {**original[chunk_at], "content": chunk_text}
        return (
            *messages,
            {"role": "assistant", "content": answer_text},
            {"role": "user", "content": prompt},
        )

    kept, shown, cut = len(answer), len(chunk), chunk
    if limit is None:
        return build(chunk, answer)
    for _ in range(FIT_ROUNDS):
        over = counter.request_tokens(build(cut, _left_out(answer, kept))) - limit
        if over <= 0:
            return build(cut, _left_out(answer, kept))
        if kept:
            kept = _share(answer[:kept], over, counter)
            continue
        shown = min(shown, _share(cut, over, counter)) - len(_note(len(chunk)))
        cut = _cut_middle(chunk, shown)
        if not cut:
            return None
    return None


def _share(text: str, over: int, counter: TokenCounter) -> int:
    """How many characters of `text` to keep so that about `over` tokens (plus a margin for
    uneven density) go."""
    tokens = max(counter.count(text), 1)
    keep = 1 - (over * 1.1 + 8) / tokens
    return max(0, int(len(text) * keep))


def _left_out(answer: str, kept: int) -> str:
    """The echoed answer: its first `kept` characters and a note of what is left out."""
    if kept >= len(answer):
        return answer
    note = f"[... {len(answer) - kept:,} more characters of this reply left out ...]"
    return f"{answer[:kept]}\n{note}" if kept else note


def _note(lines: int) -> str:
    return f"[... {lines:,} lines left out here to fit the context window ...]\n"


def _cut_middle(text: str, keep: int) -> str:
    """The text with at most `keep` of its characters, in whole lines: middle lines go, so its
    opening (the instructions) and end (the answer's format) stay; "" when nothing would."""
    lines = text.splitlines(keepends=True)
    head: list[str] = []
    tail: list[str] = []
    size = 0
    for line in lines:  # two thirds from the start
        if size + len(line) > keep * 2 // 3:
            break
        head.append(line)
        size += len(line)
    for line in reversed(lines[len(head) :]):
        if size + len(line) > keep:
            break
        tail.insert(0, line)
        size += len(line)
    dropped = len(lines) - len(head) - len(tail)
    if not head or not tail or dropped <= 0:
        return ""
    return "".join([*head, _note(dropped), *tail])
