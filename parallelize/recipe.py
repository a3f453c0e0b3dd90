"""Recipes: YAML task descriptions validated into frozen pydantic models before anything runs."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import RecipeError
from .recipe_base import Strict
from .recipe_section import (
    Aspect,
    Guard,
    Merge,
    check_aspects,
    check_guard,
    check_matrix,
    matrix_as_text,
)
from .recipe_vote import ModelEntry, Vote

if TYPE_CHECKING:
    import yaml

RECIPE_SUFFIXES = (".yaml", ".yml")
DEFAULT_SECTION_RECIPE = "summarize"
#: Command-line flags whose recipe key has another name (for error messages).
FLAGS_FOR_KEYS = {"matrix": "--each"}


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


class PriceSpec(Strict):
    """A model's price in USD per million tokens."""

    input: float = Field(ge=0, description="USD per million prompt tokens")
    output: float = Field(ge=0, description="USD per million completion tokens")


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
    params: dict[str, Any] = Field(
        default_factory=dict, description="extra request fields sent as they are"
    )
    concurrency: int | None = Field(None, ge=1, le=1024)
    rpm: float | None = Field(None, gt=0, description="requests per minute never to exceed")
    tpm: float | None = Field(None, gt=0, description="tokens per minute never to exceed")
    max_cost: float | None = Field(None, gt=0, description="USD budget: no call starts past it")
    prices: dict[str, PriceSpec] = Field(
        default_factory=dict, description="model -> {input, output} USD per million tokens"
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

    @field_validator("matrix", mode="before")
    @classmethod
    def _matrix_values_as_text(cls, value: Any) -> Any:
        return matrix_as_text(value)

    @field_validator("aspects")
    @classmethod
    def _distinct_aspects(cls, aspects: list[Aspect]) -> list[Aspect]:
        return check_aspects(aspects)

    @field_validator("matrix")
    @classmethod
    def _check_matrix(cls, matrix: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_matrix(matrix)

    @field_validator("guard")
    @classmethod
    def _guard_names_an_aspect(cls, guard: Guard | None, info: ValidationInfo) -> Guard | None:
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


def builtin_dirs() -> list[Path]:
    """Where built-in recipes live: inside an installed wheel, else the source tree."""
    here = Path(__file__).resolve().parent
    return [d for d in (here / "_recipes", here.parent / "recipes") if d.is_dir()]


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe names mapped to their files."""
    found: dict[str, Path] = {}
    for directory in builtin_dirs():
        for path in sorted(directory.iterdir()):
            if path.suffix in RECIPE_SUFFIXES:
                found.setdefault(path.stem, path)
    return found


def find_recipe(name_or_path: str) -> Recipe:
    """Load a user's recipe file, or a built-in recipe by name."""
    path = Path(name_or_path)
    if path.suffix in RECIPE_SUFFIXES or path.exists():
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {name_or_path}")
        return load_recipe(path)
    builtins = builtin_recipes()
    if name_or_path in builtins:
        return load_recipe(builtins[name_or_path])
    close = difflib.get_close_matches(name_or_path, builtins, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise RecipeError(
        f"--recipe: no built-in recipe or file named '{name_or_path}'",
        hint=f"{hint}run `parallelize recipes` to list them, or pass a path to a .yaml file",
    )


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe file; errors name the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    return parse_recipe(text, source=str(path))


def parse_recipe(text: str, *, source: str = "<recipe>") -> Recipe:
    """Validate recipe YAML text; `source` is used in error messages."""
    import yaml  # here: a run without a recipe file never loads it

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{source}{line}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of keys to values")
    data.setdefault("name", Path(source).stem)
    try:
        return Recipe.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise RecipeError(describe_validation_error(exc, source=source, root=root)) from None


def override(recipe: Recipe, values: Mapping[str, Any], *, replace: tuple[str, ...] = ()) -> Recipe:
    """Apply command-line values over a recipe (None means 'not given') and re-validate.

    Mapping values are merged into the recipe's, except for keys in `replace`.
    """
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return recipe
    data = recipe.model_dump(exclude_unset=True)
    for key, value in given.items():
        if key not in replace and isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
            value = {**data[key], **value}
        data[key] = value
    try:
        result = Recipe.model_validate({**data, "source": recipe.source})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        flag = FLAGS_FOR_KEYS.get(key, f"--{key.split('.')[-1].replace('_', '-')}")
        raise RecipeError(f"{flag}: {first['msg'].removeprefix('Value error, ')}") from None
    result._prompt_from = "--prompt" if "prompt" in given else recipe._prompt_from
    return result


def describe_validation_error(
    exc: ValidationError, *, source: str, root: yaml.Node | None = None
) -> str:
    """Turn pydantic's report into `file:line: key: problem; did you mean ...`."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in err["loc"] if p != "source")
    line = _line_of(root, loc)
    where = f"{source}:{line}" if line else source
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        known = _fields_at(Recipe, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        suggestion = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(known)})"
        return f"{where}: unknown key '{key}'{suggestion}"
    message = err["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {key}: {message}{tail}"


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the key at `loc` in the composed YAML tree (or its nearest parent)."""
    import yaml

    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that `loc` points into."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            current = next(iter(get_args(current)), current)
            continue
        fields = getattr(current, "model_fields", {})
        field = next((f for n, f in fields.items() if part in (n, f.alias)), None)
        if field is None:
            continue  # a key of a mapping field (e.g. merge.rules.<path>): same model inside
        current = _unwrap(field.annotation)
    names = getattr(current, "model_fields", {})
    return [f.alias or n for n, f in names.items() if n != "source"]


def _unwrap(annotation: Any) -> Any:
    """The model class inside Optional[...] / list[...], when there is one."""
    for arg in _iter_types(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _iter_types(annotation: Any) -> Iterator[Any]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, list, tuple, dict):
        for arg in get_args(annotation):
            yield from _iter_types(arg)
    else:
        yield annotation
