"""Recipes: built-ins load, errors name file, line and key, flags override values."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallelize.errors import RecipeError
from parallelize.recipe.load import (
    builtin_recipes,
    find_recipe,
    load_recipe,
    override,
    parse_recipe,
)


def test_every_builtin_recipe_loads() -> None:
    found = builtin_recipes()
    assert {"summarize", "code-review", "explain-codebase", "headline"} <= set(found)
    for name, path in found.items():
        recipe = load_recipe(path)
        assert recipe.name == name
        assert recipe.description


def test_typo_names_file_line_and_closest_key(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ndescription: d\nmode: section\npromt: hi {{ input }}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}:4: unknown key 'promt'; did you mean 'prompt'?"


def test_nested_typo_and_bad_value_are_located(tmp_path: Path) -> None:
    text = "name: x\nmerge:\n  stratgy: llm\n"
    with pytest.raises(
        RecipeError, match=r"x.yaml:3: unknown key 'merge.stratgy'; did you mean 'strategy'"
    ):
        parse_recipe(text, source="x.yaml")
    with pytest.raises(
        RecipeError,
        match=r"x.yaml:4: merge.strategy: Input should be 'concat', 'llm', 'json' or 'files'",
    ):
        parse_recipe("name: x\n\nmerge:\n  strategy: majority\n", source="x.yaml")
    with pytest.raises(RecipeError, match=r"x.yaml:2: temperature"):
        parse_recipe("name: x\ntemperature: 7\n", source="x.yaml")


def test_invalid_yaml_and_non_mapping() -> None:
    with pytest.raises(RecipeError, match=r"r.yaml:3: invalid YAML: expected"):
        parse_recipe("name: x\nprompt: [unclosed\n", source="r.yaml")
    with pytest.raises(RecipeError, match="must be a mapping"):
        parse_recipe("- a\n- b\n", source="r.yaml")


def test_chunking_modes_are_exclusive() -> None:
    with pytest.raises(RecipeError, match=r"r\.yaml:1: chunking: chunks cannot be combined"):
        parse_recipe("chunking:\n  chunks: 2\n  by: file\n", source="r.yaml")
    both = parse_recipe("chunking:\n  by: file\n  chunk_tokens: 4000\n", source="r.yaml")
    assert (both.chunking.by, both.chunking.chunk_tokens) == ("file", 4000)


def test_find_recipe_by_name_path_and_typo(tmp_path: Path) -> None:
    assert find_recipe("summarize").name == "summarize"
    own = tmp_path / "mine.yaml"
    own.write_text("description: mine\nprompt: 'Do it: {{ input }}'\n")
    assert find_recipe(str(own)).name == "mine"
    with pytest.raises(RecipeError, match="did you mean 'summarize'"):
        find_recipe("sumarize")
    with pytest.raises(RecipeError, match="recipe file not found"):
        find_recipe(str(tmp_path / "missing.yaml"))


def test_flags_override_recipe_values() -> None:
    base = find_recipe("code-review")
    changed = override(base, {"temperature": 0.5, "model": "m", "merge": {"strategy": "llm"}})
    assert (changed.temperature, changed.model, changed.merge.strategy) == (0.5, "m", "llm")
    assert changed.chunking.chunk_tokens == base.chunking.chunk_tokens
    chunked = override(base, {"chunking": {"chunks": 3}}, replace=("chunking",))
    assert (chunked.chunking.chunks, chunked.chunking.chunk_tokens) == (3, None)
    assert override(base, {"model": None}) is base


def test_every_recipe_part_shares_one_strict_base() -> None:
    from pydantic import BaseModel

    from parallelize.recipe import model, section, vote
    from parallelize.recipe.base import Strict

    parts = [
        value
        for module in (model, section, vote)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value is not BaseModel
    ]
    assert len(parts) >= 10 and all(issubclass(part, Strict) for part in parts)
    assert all(p.model_config["extra"] == "forbid" and p.model_config["frozen"] for p in parts)


@pytest.mark.parametrize(
    "vote", ["{answer_pattern: '('}", "{strategy: rubric, criteria: [{regex: '('}]}"]
)
def test_both_regex_keys_reject_a_pattern_that_does_not_compile(vote: str) -> None:
    with pytest.raises(RecipeError, match="invalid regular expression '\\('"):
        parse_recipe(f"name: t\nmode: vote\nprompt: x\nvote: {vote}\n")
