"""What a report shows, read from a `--format json` document: typed, checked, masked.

`--report` and `parallelize report RUN.json` both build the page from the same envelope through
`read_run`, so they give the same page. Every string of the document is masked and freed of
escape sequences here, before a template sees it; the templates then escape it for HTML or
Markdown. A document that is not a run's (a dry run, another schema, another file) is an
InputError naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import EXIT_CODES, InputError
from ..masking import mask, terminal_safe

#: The `--format json` schema a report can be made from.
SCHEMA_VERSION = 1

#: Report file suffixes and the flavour each one asks for.
FLAVOURS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}

#: Characters of one model text kept in a report; a longer one is cut with a note saying so.
TEXT_LIMIT = 200_000

#: An output up to this many lines (and TEXT_LIMIT/100 characters) is shown open, not folded.
SHORT_LINES = 16


#: How an error names the JSON type a key should have.
_KIND_NAMES = {
    int: "a whole number",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


class _Bad(Exception):
    """A key of the document is missing or of the wrong type (turned into one InputError)."""


def clean(value: object) -> str:
    """A document string made safe to show: masked, escape sequences out, controls visible."""
    text = mask(str(value)).replace("\r\n", "\n")
    text = terminal_safe(text)
    if len(text) > TEXT_LIMIT:
        more = len(text) - TEXT_LIMIT
        text = f"{text[:TEXT_LIMIT]}\n… ({more:,} more characters cut from the report)"
    return text


class _Fields:
    """Typed reads from one JSON object; a wrong type or a missing required key is `_Bad`."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise _Bad(f"{where} is not an object")
        self.data, self.where = data, where

    def _get(self, key: str, kinds: tuple[type, ...], default: Any) -> Any:
        value = self.data.get(key, default)
        if value is default:
            return default
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise _Bad(f"{self.where}.{key} is not {_KIND_NAMES[kinds[0]]}")
        return value

    def required(self, key: str, kind: type) -> Any:
        if key not in self.data:
            raise _Bad(f"{self.where} has no '{key}'")
        return self._get(key, (kind,), None)

    def text(self, key: str, default: str = "") -> str:
        value = self._get(key, (str,), None)
        return default if value is None else clean(value)

    def opt_text(self, key: str) -> str | None:
        value = self._get(key, (str,), None)
        return None if value is None else clean(value)

    def integer(self, key: str, default: int = 0) -> int:
        value = self._get(key, (int,), None)
        return default if value is None else value

    def number(self, key: str) -> float | None:
        value = self._get(key, (int, float), None)
        return None if value is None else float(value)

    def flag(self, key: str) -> bool:
        return bool(self._get(key, (bool,), False))

    def items(self, key: str) -> list[Any]:
        return list(self._get(key, (list,), None) or [])

    def sub(self, key: str) -> _Fields:
        return _Fields(self._get(key, (dict,), None) or {}, f"{self.where}.{key}")

    def texts(self, key: str) -> tuple[str, ...]:
        return tuple(clean(v) for v in self.items(key) if isinstance(v, str | int | float))


@dataclass(frozen=True)
class Call:
    """One call of the run: a chunk, a candidate, a merge or a judge call, and its output."""

    label: str
    status: str
    model: str
    paths: tuple[str, ...]
    #: The chunk's input tokens (None for calls that have no chunk).
    tokens: int | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    attempts: int
    duration: float
    error: str | None
    output: str
    #: What else tells the call apart: aspect, clone, split parts.
    detail: str
    #: Its duration as a share of the run's slowest call, in percent (for the timing bar).
    bar: float = 0.0

    @property
    def lines(self) -> int:
        return self.output.count("\n") + 1 if self.output else 0

    @property
    def short(self) -> bool:
        """Short enough to show open instead of folded."""
        return self.lines <= SHORT_LINES and len(self.output) <= TEXT_LIMIT // 100


@dataclass(frozen=True)
class Candidate:
    """One vote candidate with what the vote made of it."""

    number: int
    model: str
    weight: float
    status: str
    winner: bool
    excluded: str | None
    answer: str | None
    votes: float | None
    score: float | None
    scores: tuple[tuple[str, float], ...]
    note: str
    text: str
    #: Its call, when the document has it (timings and tokens).
    call: Call | None

    @property
    def short(self) -> bool:
        lines = self.text.count("\n") + 1
        return lines <= 2 * SHORT_LINES and len(self.text) <= TEXT_LIMIT // 50


@dataclass(frozen=True)
class Round:
    """One judge round: the order shown (candidate numbers), the pick and the judge's reason."""

    number: int
    order: tuple[int, ...]
    picked: int | None
    reason: str


@dataclass(frozen=True)
class Group:
    """One answer of a consensus split: which candidates gave it and its share of the votes."""

    answer: str
    candidates: tuple[int, ...]
    votes: float
    share: float


@dataclass(frozen=True)
class Vote:
    """How the vote went: the winner (a candidate number), why, agreement and every candidate."""

    strategy: str
    n: int
    winner: int | None
    reason: str
    error: str | None
    share: float | None
    agreement: float | None
    picked_by: str | None
    judge_model: str | None
    rounds: tuple[Round, ...]
    split: tuple[Group, ...]
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class Inputs:
    """What a section run read."""

    summary: str
    files: int
    bytes: int
    tokens: int
    counter: str
    context_window: int | None
    window_source: str
    skipped: tuple[tuple[str, tuple[str, ...]], ...]
    secrets: int
    encodings: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Run:
    """A finished `section` or `vote` run as a report shows it."""

    command: str
    recipe: str
    model: str
    exit_code: int
    exit_meaning: str
    wall_time: float
    result: str
    warnings: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float | None
    saved_usd: float | None
    unpriced: tuple[str, ...]
    requests: int | None
    cached_calls: int
    retries: int
    stopped: str | None
    merge_strategy: str | None
    tasks: tuple[Call, ...]
    aggregate: tuple[Call, ...]
    inputs: Inputs | None
    vote: Vote | None

    @property
    def calls(self) -> int:
        return len(self.tasks) + len(self.aggregate)

    @property
    def failures(self) -> tuple[Call, ...]:
        return tuple(c for c in (*self.tasks, *self.aggregate) if c.status in ("failed", "skipped"))

    @property
    def truncated(self) -> tuple[Call, ...]:
        return tuple(c for c in (*self.tasks, *self.aggregate) if c.status == "truncated")


def read_run(doc: object, *, source: str) -> Run:
    """The report's view of a run document; InputError (exit 2) when it is not one."""
    try:
        return _run(_Fields(doc, "the document"))
    except _Bad as exc:
        raise InputError(f"{source}: not a parallelize run document: {exc}") from None


def _run(top: _Fields) -> Run:
    version = top.required("schema_version", int)
    if version != SCHEMA_VERSION:
        raise _Bad(
            f"schema_version {version} (this version reads {SCHEMA_VERSION}; "
            "re-run the command with this version's --format json)"
        )
    command = top.required("command", str)
    if command not in ("section", "vote"):
        raise _Bad(f"command '{clean(command)}' (a report shows a section or vote run)")
    if top.flag("dry_run"):
        raise _Bad("it is a dry run's plan (run without --dry-run to have results to show)")
    top.required("tasks", list)
    tasks = _calls(top, "tasks")
    aggregate = _calls(top, "aggregate_calls")
    slowest = max((c.duration for c in (*tasks, *aggregate)), default=0.0)
    if slowest > 0:
        tasks = tuple(replace(c, bar=round(100 * c.duration / slowest, 1)) for c in tasks)
        aggregate = tuple(replace(c, bar=round(100 * c.duration / slowest, 1)) for c in aggregate)
    usage, cost, engine = top.sub("usage"), top.sub("cost"), top.sub("engine")
    exit_code = top.integer("exit_code")
    merge = top.sub("merge")
    return Run(
        command=command,
        recipe=top.text("recipe", command),
        model=top.text("model"),
        exit_code=exit_code,
        exit_meaning=EXIT_CODES.get(exit_code, "unknown exit code"),
        wall_time=top.number("wall_time") or 0.0,
        result=top.text("result"),
        warnings=top.texts("warnings"),
        prompt_tokens=usage.integer("prompt_tokens"),
        completion_tokens=usage.integer("completion_tokens"),
        cached_tokens=usage.integer("cached_tokens"),
        cost_usd=cost.number("usd"),
        saved_usd=cost.number("saved_usd"),
        unpriced=cost.texts("unpriced_models"),
        requests=engine.integer("requests") if "requests" in engine.data else None,
        cached_calls=engine.integer("cached"),
        retries=engine.integer("retries"),
        stopped=engine.opt_text("stopped"),
        merge_strategy=merge.opt_text("strategy"),
        tasks=tasks,
        aggregate=aggregate,
        inputs=_inputs(top) if command == "section" else None,
        vote=_vote(top, tasks) if command == "vote" else None,
    )


def _calls(top: _Fields, key: str) -> tuple[Call, ...]:
    return tuple(_call(_Fields(item, f"{key}[{i}]")) for i, item in enumerate(top.items(key)))


def _call(task: _Fields) -> Call:
    usage = task.sub("usage")
    details = [f"aspect {task.text('aspect')}" if task.text("aspect") else ""]
    details.append(f"clone {task.text('clone')}" if task.text("clone") else "")
    split = task.integer("split")
    details.append(f"sent in {split} parts" if split else "")
    tokens = task.data.get("tokens")
    return Call(
        label=task.text("label", "call"),
        status=task.text("status", "ok"),
        model=task.text("model"),
        paths=task.texts("paths"),
        tokens=task.integer("tokens") if tokens is not None else None,
        prompt_tokens=usage.integer("prompt_tokens"),
        completion_tokens=usage.integer("completion_tokens"),
        cached=task.flag("cached"),
        attempts=task.integer("attempts"),
        duration=task.number("duration_s") or 0.0,
        error=task.opt_text("error"),
        output=task.text("output"),
        detail=" · ".join(d for d in details if d),
    )


def _inputs(top: _Fields) -> Inputs | None:
    if "inputs" not in top.data:
        return None
    inputs = top.sub("inputs")
    skipped = inputs.sub("skipped")
    encodings = inputs.sub("encodings")
    return Inputs(
        summary=inputs.text("summary"),
        files=inputs.integer("files"),
        bytes=inputs.integer("bytes"),
        tokens=inputs.integer("tokens"),
        counter=top.text("counter"),
        context_window=top.integer("context_window") or None,
        window_source=top.text("context_window_source"),
        skipped=tuple((clean(k), skipped.texts(k)) for k in skipped.data),
        secrets=len(inputs.items("secrets")),
        encodings=tuple((clean(k), encodings.text(k)) for k in encodings.data),
    )


def _vote(top: _Fields, tasks: tuple[Call, ...]) -> Vote:
    rounds = []
    for i, item in enumerate(top.items("rounds")):
        one = _Fields(item, f"rounds[{i}]")
        order = tuple(n + 1 for n in one.items("order") if isinstance(n, int))
        winner = one.integer("winner", -1)
        picked = winner + 1 if winner >= 0 else None
        rounds.append(Round(one.integer("round", i) + 1, order, picked, one.text("reason")))
    split = []
    for i, item in enumerate(top.items("split")):
        group = _Fields(item, f"split[{i}]")
        members = tuple(n + 1 for n in group.items("candidates") if isinstance(n, int))
        votes, share = group.number("votes") or 0.0, group.number("share") or 0.0
        split.append(Group(group.text("answer"), members, votes, share))
    winner = top.data.get("winner")
    return Vote(
        strategy=top.text("strategy", "vote"),
        n=top.integer("n"),
        winner=top.integer("winner") + 1 if winner is not None else None,
        reason=top.text("reason"),
        error=top.opt_text("error"),
        share=top.number("share"),
        agreement=top.number("agreement"),
        picked_by=_picked_by(top),
        judge_model=top.opt_text("judge_model"),
        rounds=tuple(rounds),
        split=tuple(split),
        candidates=tuple(
            _candidate(_Fields(item, f"candidates[{i}]"), tasks)
            for i, item in enumerate(top.items("candidates"))
        ),
    )


def _picked_by(top: _Fields) -> str | None:
    """Who picked the winner (`strategy` or `human`): `vote.picked_by`, or a top-level key."""
    nested = top.data.get("vote")
    value = nested.get("picked_by") if isinstance(nested, Mapping) else top.data.get("picked_by")
    return clean(value) if isinstance(value, str) else None


def _candidate(cand: _Fields, tasks: tuple[Call, ...]) -> Candidate:
    index = cand.integer("index")
    scores = cand.sub("scores")
    return Candidate(
        number=index + 1,
        model=cand.text("model"),
        weight=cand.number("weight") or 1.0,
        status=cand.text("status", "ok"),
        winner=cand.flag("winner"),
        excluded=cand.opt_text("excluded"),
        answer=cand.opt_text("answer"),
        votes=cand.number("votes"),
        score=cand.number("score"),
        scores=tuple((clean(k), scores.number(k) or 0.0) for k in scores.data),
        note=cand.text("note"),
        text=cand.text("text"),
        call=tasks[index] if 0 <= index < len(tasks) else None,
    )
