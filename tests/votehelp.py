"""Helpers shared by the vote tests: a vote recipe on the loopback model, scripted replies."""

from __future__ import annotations

import re
from typing import Any

from llmserver import LLMServer, prompt_text

from parallelize.recipe.model import Recipe

JUDGE = "impartial judge"
SCORER = "strict, fair grader"
TASK = "Name a colour."


def recipe(**vote: Any) -> Recipe:
    """A vote recipe on the loopback model; `concurrency`/`temperature`/`seed` go to the recipe."""
    top = {k: vote.pop(k) for k in ("concurrency", "temperature", "seed", "models") if k in vote}
    top.setdefault("concurrency", 1)
    base = {"name": "t", "mode": "vote", "model": "test-model"}
    return Recipe.model_validate({**base, **top, "vote": vote})


def candidates(llm: LLMServer, *texts: str, **kw: Any) -> None:
    """Script the candidates' replies, in candidate order (with concurrency 1)."""
    for text in texts:
        llm.script(lambda body: JUDGE not in prompt_text(body), text, times=1, **kw)


def judge_says(llm: LLMServer, reply: str | Any, **kw: Any) -> None:
    llm.script(JUDGE, reply, **kw)


def judge_requests(llm: LLMServer) -> list:
    return [r for r in llm.requests if JUDGE in r.prompt]


def shown_order(prompt: str, texts: list[str]) -> list[int]:
    """Which candidate (by its text) the judge saw under each label, in label order."""
    found = re.findall(r'<candidate label="([A-Z]+)">\n(.*?)\n</candidate>', prompt, re.S)
    return [texts.index(text) for _, text in found]
