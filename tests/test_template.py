"""Placeholders: single pass, unknown names are errors, input appended when not placed."""

from __future__ import annotations

import pytest

from parallelize.errors import RecipeError
from parallelize.plan.template import check_template, placeholders, render


def test_single_pass_keeps_file_text_literal() -> None:
    text = render("Review {{ paths }}:\n{{input}}", {"input": "x = '{{ paths }}'", "paths": "a.py"})
    assert text == "Review a.py:\nx = '{{ paths }}'"


def test_input_is_appended_when_not_placed() -> None:
    assert render("Summarize this.", {"input": "DATA"}) == "Summarize this.\n\nDATA"
    assert render("", {"input": "DATA"}) == "DATA"


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(RecipeError, match=r"unknown placeholder '\{\{ chunk \}\}'"):
        check_template("{{ chunk }}", {"input"}, where="r.yaml")
    with pytest.raises(RecipeError, match="unknown placeholder"):
        render("{{ nope }}", {"input": "x"})


def test_placeholders_in_order_without_duplicates() -> None:
    assert placeholders("{{ b }} {{a}} {{ b }}") == ["b", "a"]
