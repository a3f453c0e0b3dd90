"""What a recipe or flag written by a stranger may not do: take over the request fields the tool
owns, fan out to more calls than `max_tasks`, or put text into output paths that cannot be files.

Each check runs while the recipe is validated (or, for the chunk count, before the tasks are
built), so a hostile recipe fails with exit 2 before a single request is paid for.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator

#: Calls a run may plan unless `--max-tasks` / recipe `max_tasks` says otherwise: far above any
#: real fan-out, far below a matrix that would exhaust memory or a budget by accident.
DEFAULT_MAX_TASKS = 100_000

#: Request fields parallelize sets itself, with what to use instead of `params`.
OWNED_PARAMS: dict[str, str] = {
    "model": "use the recipe's model: key or --model",
    "messages": "use prompt: and system:",
    "stream": "parallelize chooses how to read replies",
    "stream_options": "parallelize chooses how to read replies",
    "n": "use parallelize vote -n (vote.n) for several samples",
    "tools": "use the recipe's tools: key or --tools",
    "tool_choice": "parallelize offers the recipe's tools: and chooses",
    "parallel_tool_calls": "parallelize always lets a reply's tool calls run at once",
}

#: `response_format` types that still yield a JSON document.
JSON_FORMATS = ("json_object", "json_schema")
#: The longest file or directory name most file systems allow, in bytes.
NAME_MAX = 255
#: Whitespace control characters a matrix value may hold when it is only prompt text.
TEXT_CONTROLS = frozenset("\t\n")
#: The environment variables an ensemble entry may take its key from.
KEY_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*_API_KEY")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def check_param_key(key: str) -> str:
    """A `params` key must not be a field parallelize sets itself."""
    if key in OWNED_PARAMS:
        raise ValueError(
            f"'{key}' is set by parallelize, not by params ({OWNED_PARAMS[key]}); "
            "remove it from params"
        )
    return key


def check_finite_values(params: dict[str, Any]) -> dict[str, Any]:
    """No inf or nan anywhere in `params`: such a request cannot even be encoded as JSON."""

    def walk(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} is {value}, not a finite number")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    for key, value in params.items():
        walk(value, key)
    return params


#: A request field a recipe may add: anything but the fields parallelize sets itself.
ParamKey = Annotated[str, AfterValidator(check_param_key)]
#: A recipe's (or an ensemble entry's) extra request fields.
Params = Annotated[dict[ParamKey, Any], AfterValidator(check_finite_values)]


def check_key_env(name: str | None) -> str | None:
    """An ensemble entry's `api_key_env` names an API key, nothing else: a recipe in a pull
    request must not be able to send GITHUB_TOKEN or a cloud secret to a base_url it chose."""
    if name is not None and not KEY_ENV.fullmatch(name):
        raise ValueError(
            f"'{name}' is not an API key variable: api_key_env must name one ending in _API_KEY "
            "(e.g. ANTHROPIC_API_KEY), so a recipe cannot send other secrets to its base_url"
        )
    return name


def check_reply_format(params: Mapping[str, Any], needs: str) -> None:
    """A `params.response_format` must not contradict JSON answers the recipe relies on."""
    wanted = params.get("response_format")
    if wanted is None:
        return
    kind = wanted.get("type") if isinstance(wanted, Mapping) else None
    if kind not in JSON_FORMATS:
        raise ValueError(
            f"{needs} needs JSON answers, but params.response_format is {wanted!r}; "
            "remove params.response_format, or make it {type: json_object} or a json_schema"
        )


def clone_count(matrix: Mapping[str, Sequence[str]]) -> int:
    """How many clones a matrix makes: the product of its list lengths (1 without a matrix)."""
    return math.prod(len(values) for values in matrix.values())


def fanout_problem(
    *,
    chunks: int | None,
    aspects: int,
    matrix: Mapping[str, Sequence[str]],
    limit: int,
    flag: str = "--max-tasks",
) -> str | None:
    """Why chunks × aspects × clones is too many calls, or None; counted, never built.

    `chunks` None means not known yet (at least one).
    """
    clones = clone_count(matrix)
    total = (chunks or 1) * max(aspects, 1) * clones
    if total <= limit:
        return None
    parts = []
    if chunks is not None:
        parts.append(f"{chunks:,} chunk{'s' if chunks != 1 else ''}")
    if aspects:
        parts.append(f"{aspects:,} aspect{'s' if aspects != 1 else ''}")
    if matrix:
        sizes = " x ".join(f"{name} {len(values):,}" for name, values in matrix.items())
        parts.append(f"{clones:,} matrix clones [{sizes}]")
    made = "at least " if chunks is None else ""
    return (
        f"the run would make {made}{total:,} calls ({' x '.join(parts)}), more than "
        f"{flag} {limit:,}; raise --max-tasks or recipe max_tasks"
    )


def check_matrix_text(matrix: Mapping[str, Sequence[str]]) -> None:
    """Matrix values are labels and prompt text: no NUL or other control characters."""
    for name, values in matrix.items():
        for index, value in enumerate(values):
            bad = next((c for c in value if _is_control(c) and c not in TEXT_CONTROLS), None)
            if bad is not None:
                problem = f"contains {_named(bad)}; matrix values are plain text"
                raise ValueError(_value_problem(name, index, value, problem))


def check_matrix_paths(matrix: Mapping[str, Sequence[str]], path_template: str) -> None:
    """Values that become output file names must be one plain name each, short enough.

    `path_template` is the merge's output path template (its default when the recipe gives
    none); `{{ clone }}` names every variable, joined with `_`.
    """
    used = set(PLACEHOLDER.findall(path_template))
    named = list(matrix) if "clone" in used else [v for v in matrix if v in used]
    for name in named:
        for index, value in enumerate(matrix[name]):
            bad = next((c for c in value if _is_control(c)), None)
            if bad is not None:
                problem = f"contains {_named(bad)}"
            elif "/" in value or "\\" in value:
                problem = "contains a path separator"
            elif value.strip() in (".", ".."):
                problem = "is not a file name"
            elif len(value.encode("utf-8")) > NAME_MAX:
                problem = f"is longer than a file name may be ({NAME_MAX} bytes)"
            else:
                continue
            raise ValueError(
                _value_problem(name, index, value, problem)
                + " and names an output file (merge.path); choose another value"
            )
    if "clone" in used and len(matrix) > 1:
        longest = sum(max(len(v.encode("utf-8")) for v in vs) for vs in matrix.values())
        longest += len(matrix) - 1
        if longest > NAME_MAX:
            raise ValueError(
                f"the longest clone name ({{{{ clone }}}}: {', '.join(matrix)} joined) is "
                f"{longest} bytes, longer than a file name may be ({NAME_MAX}); shorten the "
                "values, or name the files with merge.path"
            )


def check_path_text(value: str | None) -> str | None:
    """An output directory or path template with a control character cannot be created."""
    bad = next((c for c in value or "" if _is_control(c)), None)
    if bad is not None:
        raise ValueError(f"{value!r} contains {_named(bad)}; a path cannot")
    return value


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def _named(char: str) -> str:
    return f"the control character U+{ord(char):04X}{' (NUL)' if char == chr(0) else ''}"


def _value_problem(name: str, index: int, value: str, problem: str) -> str:
    shown = repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
    return f"{name}[{index}] = {shown} {problem}"
