"""Workers that must answer JSON: ask for it, check every answer, give a bad one one repair.

The endpoint's JSON mode (or structured outputs when a schema is known) is requested; an endpoint
that rejects the parameter gets instructions only (client.PARAM_ADAPTATIONS drops it). Either way
every answer is parsed and validated here, because no server's promise is taken on trust.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, FatalLLMError, RecipeError
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
) -> JsonCheck:
    """Validate every JSON answer; run one repair call for each bad one (in parallel)."""
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
    repairs = [repair_task(results[p], problem) for p, problem in problems.items()]
    try:
        done = executor.run(repairs)
    except FatalLLMError as exc:  # e.g. context overflow: the repairs fail, the rest is kept
        check.exit_code, check.fatal = exc.exit_code, str(exc)
        done = [TaskResult(task, error=str(exc)) for task in repairs]
    for position, repair in zip(problems, done, strict=True):
        first = results[position]
        contract = contracts[first.task.index]
        spent = first.usage + repair.usage
        attempts = first.attempts + repair.attempts
        problem = problems[position]
        if repair.succeeded:
            try:
                check.values[first.task.index] = contract.parse(repair.text)
            except JSONReplyError as exc:
                problem = str(exc)
            else:
                check.repaired += 1
                check.results[position] = CheckedResult(
                    first.task, repair.completion, None, attempts, spent, repaired=True
                )
                continue
        else:
            problem = f"{problem}; the repair call failed: {repair.error}"
        check.invalid += 1
        error = f"invalid JSON after one repair: {problem}"
        check.results[position] = CheckedResult(first.task, None, error, attempts, spent)
    return check


def repair_task(result: TaskResult, problem: str) -> Task:
    """The same conversation plus the bad answer and the parse error: one chance to fix it."""
    request = result.task.request
    messages = (
        *request.messages,
        {"role": "assistant", "content": result.text},
        {"role": "user", "content": REPAIR_PROMPT.format(problem=problem)},
    )
    repaired = ChatRequest(request.model, messages, request.params, request.sample)
    return Task(result.task.index, f"{result.task.label} (repair)", repaired, result.task.source)
