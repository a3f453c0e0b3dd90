"""`{{ name }}` placeholders: single-pass substitution, no logic, nothing executed.

Values are inserted as they are and never rendered again, so a file that contains `{{ x }}`
reaches the model literally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import RecipeError

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
INPUT = "input"


def placeholders(template: str) -> list[str]:
    """The placeholder names a template uses, in order of first appearance."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def check_template(template: str, allowed: set[str], *, where: str) -> None:
    """Fail before any request when a template names a variable that will not exist."""
    for name in placeholders(template):
        if name not in allowed:
            choices = ", ".join(sorted(allowed))
            raise RecipeError(
                f"{where}: unknown placeholder '{{{{ {name} }}}}' (available: {choices})"
            )


def render(template: str, values: Mapping[str, str], *, append_input: bool = True) -> str:
    """Fill placeholders in one pass; append the input when the template does not place it."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise RecipeError(f"unknown placeholder '{{{{ {name} }}}}' in the prompt template")
        return values[name]

    text = PLACEHOLDER.sub(fill, template)
    if append_input and INPUT in values and INPUT not in placeholders(template):
        text = f"{text.rstrip()}\n\n{values[INPUT]}" if text.strip() else values[INPUT]
    return text
