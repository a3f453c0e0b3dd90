"""Finding, reading and overriding recipes: built-in names, YAML files with file:line errors."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ValidationError,
)

from ..errors import RecipeError
from .model import FLAGS_FOR_KEYS, Recipe

if TYPE_CHECKING:
    import yaml

RECIPE_SUFFIXES = (".yaml", ".yml")
#: Bytes a recipe may hold: a prompt and settings, never data (the largest built-in is ~3 KB).
MAX_RECIPE_BYTES = 4 * 1024 * 1024


DEFAULT_SECTION_RECIPE = "summarize"
#: The name of the recipe a `--prompt` without `--recipe` makes (plan, summary, JSON).
PROMPT_RECIPE = "custom"


def builtin_dirs() -> list[Path]:
    """Where built-in recipes live: inside an installed wheel, else the source tree."""
    here = Path(__file__).resolve().parent.parent  # the package folder
    return [d for d in (here / "_recipes", here.parent / "recipes") if d.is_dir()]


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe names mapped to their files."""
    found: dict[str, Path] = {}
    for directory in builtin_dirs():
        for path in sorted(directory.iterdir()):
            if path.suffix in RECIPE_SUFFIXES:
                found.setdefault(path.stem, path)
    return found


def section_recipe(name_or_path: str | None, *, prompt: str | None = None) -> Recipe:
    """The recipe a section run starts from: the one named; else, with a --prompt, a bare one
    (no built-in system prompt or temperature the user never asked for); else `summarize`."""
    if name_or_path:
        return find_recipe(name_or_path)
    if prompt is not None:
        return Recipe(name=PROMPT_RECIPE)
    return find_recipe(DEFAULT_SECTION_RECIPE)


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
        with path.open("rb") as handle:  # at most one byte past the limit: never a huge read
            raw = handle.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise _too_large(str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: a recipe must be UTF-8 text (byte {exc.start})") from None
    return parse_recipe(text, source=str(path))


def parse_recipe(text: str, *, source: str = "<recipe>") -> Recipe:
    """Validate recipe YAML text; `source` is used in error messages."""
    from .yamlread import read_yaml  # here: a run without a recipe file never loads YAML

    if len(text) > MAX_RECIPE_BYTES:
        raise _too_large(source)
    root, data = read_yaml(text, source=source)
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of keys to values")
    data.setdefault("name", Path(source).stem)
    try:
        return Recipe.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise RecipeError(describe_validation_error(exc, source=source, root=root)) from None


def _too_large(source: str) -> RecipeError:
    return RecipeError(
        f"{source}: the recipe is larger than {MAX_RECIPE_BYTES // 2**20} MiB; a recipe holds "
        "a prompt and settings, not data (pass data as PATH or TASK)"
    )


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
        key = ".".join(str(p) for p in _keys(first["loc"]))
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
    loc = tuple(p for p in _keys(err["loc"]) if p != "source")
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


def _keys(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """An error's location without pydantic's `[key]` marker (a mapping key was refused)."""
    return tuple(p for p in loc if p != "[key]")


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
