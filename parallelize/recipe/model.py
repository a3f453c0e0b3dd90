"""Recipes: YAML task descriptions validated into frozen pydantic models before anything runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .base import Strict
from .limits import (
    DEFAULT_MAX_TASKS,
    Params,
    check_matrix_paths,
    check_matrix_text,
    check_reply_format,
    fanout_problem,
)
from .section import Aspect, Guard, Merge, check_aspects, check_guard, check_matrix, matrix_as_text
from .tools import DEFAULT_MAX_TOOL_ROUNDS, ToolEntry, check_tool_entries, parse_tool_entries
from .vote import ModelEntry, Vote

#: Command-line flags whose recipe key has another name (for error messages).
FLAGS_FOR_KEYS = {"matrix": "--each", "chunking": "--chunks"}


class Chunking(Strict):
    """How section input is cut: chunks, or chunk_tokens and/or by (one chunk per file)."""

    chunks: int | None = Field(None, ge=1, description="exactly N chunks balanced by tokens")
    chunk_tokens: int | None = Field(None, ge=16, description="token budget per request")
    by: Literal["file"] | None = Field(None, description="'file': one chunk per file")
    overlap: int = Field(
        0, ge=0, le=10_000, description="lines of a split file repeated at its next piece's start"
    )

    @model_validator(mode="after")
    def _one_mode(self) -> Chunking:
        chosen = [k for k in ("chunk_tokens", "by") if getattr(self, k) is not None]
        if self.chunks is not None and chosen:
            raise ValueError(f"chunks cannot be combined with {' or '.join(chosen)}")
        return self


#: Each discounted rate of a price and the list rate it may not exceed.
DISCOUNTS = (("cached_input", "input"), ("batch_input", "input"), ("batch_output", "output"))


class PriceSpec(Strict):
    """A model's price in USD per million tokens; a discounted rate left out is the list rate."""

    input: float = Field(ge=0, description="USD per million prompt tokens")
    output: float = Field(ge=0, description="USD per million completion tokens")
    cached_input: float | None = Field(
        None, ge=0, description="USD per million prompt tokens served from the prompt cache"
    )
    batch_input: float | None = Field(None, ge=0, description="Batch API: per million prompt")
    batch_output: float | None = Field(None, ge=0, description="Batch API: per million completion")

    @model_validator(mode="after")
    def _discounts_below_list(self) -> PriceSpec:
        """A discounted rate above its list rate is a typo (say, the two swapped)."""
        for name, base in DISCOUNTS:
            rate, listed = getattr(self, name), getattr(self, base)
            if rate is not None and rate > listed:
                raise ValueError(f"{name} {rate:g} is above {base} {listed:g} (swapped?)")
        return self


class Inputs(Strict):
    """Which files a section reads, and what happens to secrets found in them."""

    include: tuple[str, ...] = Field((), description="only files matching these globs")
    exclude: tuple[str, ...] = Field((), description="skip files and folders matching these")
    max_file_bytes: int | None = Field(None, ge=1, description="skip larger files (1 MiB)")
    on_secret: Literal["redact", "fail", "allow"] = Field(
        "redact", description="redact: send markers; fail: stop first; allow: no scan"
    )


class Recipe(Strict):
    """One task: the identical prompt every worker runs, its parameters and how results combine."""

    name: str = "custom"
    description: str = ""
    mode: Literal["section", "vote"] = "section"
    model: str | None = None
    system: str | None = None
    prompt: str = "{{ input }}"
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: list[str] | None = None
    params: Params = Field(
        default_factory=dict, description="extra request fields sent as they are"
    )
    concurrency: int | None = Field(None, ge=1, le=1024)
    rpm: float | None = Field(None, gt=0, description="requests per minute never to exceed")
    tpm: float | None = Field(None, gt=0, description="tokens per minute never to exceed")
    max_cost: float | None = Field(None, gt=0, description="USD budget: no call starts past it")
    batch: bool = Field(
        False, description="send the calls through the provider's Batch API (--batch)"
    )
    #: Declared before the fan-out keys below: their validators compare against it.
    max_tasks: int = Field(
        DEFAULT_MAX_TASKS, ge=1, description="most calls a run may plan (chunks x aspects x clones)"
    )
    prices: dict[str, PriceSpec] = Field(
        default_factory=dict,
        description="model -> {input, output, cached_input, batch_input, batch_output} USD/1M",
    )
    context_window: int | None = Field(None, ge=256)
    tokenizer: Literal["o200k", "cl100k", "estimate", "server"] | None = Field(
        None, description="how tokens are counted (default: tiktoken for the model)"
    )
    inputs: Inputs = Inputs()
    chunking: Chunking = Chunking()
    merge: Merge = Merge()
    vote: Vote = Vote()
    models: list[ModelEntry] | None = Field(
        None, description="an ensemble (vote): replaces model when given; names are unique"
    )
    aspects: list[Aspect] = Field(
        default_factory=list, description="named aspects; every chunk runs once per aspect"
    )
    matrix: dict[str, list[str]] = Field(
        default_factory=dict, description="variables whose product makes isolated clones"
    )
    guard: Guard | None = Field(None, description="gate the answer on a screening aspect")
    tools: list[ToolEntry] = Field(
        default_factory=list, description="tools the workers may call (fs, commands, mcp)"
    )
    max_tool_rounds: int = Field(
        DEFAULT_MAX_TOOL_ROUNDS, ge=1, le=100, description="tool rounds before a worker answers"
    )
    source: str | None = Field(None, exclude=True, description="file the recipe came from")
    #: "--prompt" once the command line replaced the recipe file's prompt.
    _prompt_from: str | None = PrivateAttr(None)

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[ModelEntry] | None) -> list[ModelEntry] | None:
        names = [m.name for m in models or ()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if models == []:
            raise ValueError("list at least one model, or leave models out")
        if twice:
            raise ValueError(f"model names must be unique (repeated: {', '.join(twice)})")
        return models

    @field_validator("tools", mode="before")
    @classmethod
    def _tool_kinds(cls, tools: Any) -> Any:
        return parse_tool_entries(tools)

    @field_validator("tools")
    @classmethod
    def _tools_once(cls, tools: list[ToolEntry]) -> list[ToolEntry]:
        return check_tool_entries(tools)

    @field_validator("matrix", mode="before")
    @classmethod
    def _matrix_values_as_text(cls, value: Any) -> Any:
        return matrix_as_text(value)

    @field_validator("chunking")
    @classmethod
    def _chunks_within_max_tasks(cls, chunking: Chunking, info: ValidationInfo) -> Chunking:
        _check_fanout(info.data, chunks=chunking.chunks)
        return chunking

    @field_validator("merge")
    @classmethod
    def _merge_json_gets_json(cls, merge: Merge, info: ValidationInfo) -> Merge:
        if merge.strategy == "json" or merge.json_schema is not None:
            needs = "strategy json" if merge.strategy == "json" else "a merge schema"
            check_reply_format(info.data.get("params", {}), needs)
        return merge

    @field_validator("aspects")
    @classmethod
    def _distinct_aspects(cls, aspects: list[Aspect], info: ValidationInfo) -> list[Aspect]:
        for aspect in aspects:
            if aspect.json_schema is not None:
                check_reply_format(info.data.get("params", {}), f"aspect {aspect.name}'s schema")
        _check_fanout(info.data, aspects=len(aspects))
        return check_aspects(aspects)

    @field_validator("matrix")
    @classmethod
    def _check_matrix(
        cls, matrix: dict[str, list[str]], info: ValidationInfo
    ) -> dict[str, list[str]]:
        check_matrix(matrix)
        check_matrix_text(matrix)
        _check_fanout(info.data, aspects=len(info.data.get("aspects", ())), matrix=matrix)
        merge = info.data.get("merge")
        if matrix and merge is not None and merge.strategy == "files":
            check_matrix_paths(matrix, merge.path or "{{ clone }}")
        return matrix

    @field_validator("guard")
    @classmethod
    def _guard_names_an_aspect(cls, guard: Guard | None, info: ValidationInfo) -> Guard | None:
        if guard is not None:
            check_reply_format(info.data.get("params", {}), "guard (a JSON verdict)")
        return check_guard(guard, info.data.get("aspects", []))

    @property
    def prompt_where(self) -> str:
        """Where the prompt came from, for its errors: not the file when --prompt replaced it."""
        return self._prompt_from or self.source or "prompt"

    def worker_params(self) -> dict[str, Any]:
        """Request parameters shared by every worker (identical by construction)."""
        params = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": self.stop,
        }
        return {k: v for k, v in params.items() if v is not None} | dict(self.params)


def _check_fanout(
    data: dict[str, Any],
    *,
    chunks: int | None = None,
    aspects: int = 0,
    matrix: dict[str, list[str]] | None = None,
) -> None:
    """The calls the recipe alone implies (chunks unknown count as one) within max_tasks."""
    if chunks is None and data.get("chunking") is not None:
        chunks = data["chunking"].chunks
    problem = fanout_problem(
        chunks=chunks,
        aspects=aspects,
        matrix=matrix or {},
        limit=data.get("max_tasks", DEFAULT_MAX_TASKS),
        flag="max_tasks",
    )
    if problem:
        raise ValueError(problem)
