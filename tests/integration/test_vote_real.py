"""`run_vote` against a real llama.cpp server (random-weight model: gibberish, never EOS).

What only a real server shows: N separate requests are N different samples (llama.cpp mishandles
`n > 1`), a fixed seed reproduces them (attempt i sends seed + i), every candidate is truncated
(the model never stops), and a judge prompt can outgrow a small per-slot context.
"""

from __future__ import annotations

import pytest
import serve  # tools/realserver/serve.py, on the path through conftest

from parallelize import RunOptions, run_vote
from parallelize.recipe.model import Recipe


@pytest.fixture
def endpoint(real_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", real_server.base_url)


def vote_recipe(**vote) -> Recipe:
    base = {"mode": "vote", "model": "tiny-llama", "max_tokens": 12}
    return Recipe.model_validate({**base, **vote.pop("top", {}), "vote": vote})


def texts(result) -> list[str]:
    return [c["text"] for c in result.details["candidates"]]


def test_separate_requests_are_distinct_samples_and_a_seed_reproduces_them(endpoint) -> None:
    recipe = vote_recipe(n=3, strategy="consensus", quorum=0.3, top={"seed": 7})
    fresh = RunOptions(cache=False)  # the server must reproduce them, not our cache
    first = run_vote("Name a colour.", recipe, options=fresh)
    again = run_vote("Name a colour.", recipe, options=fresh)
    assert len(set(texts(first))) == 3  # three samples, not one answer three times
    assert texts(again) == texts(first)  # seed 7, 8, 9 again
    assert [t.request.params["seed"] for t in first.tasks] == [7, 8, 9]
    assert all(c["status"] == "truncated" for c in first.details["candidates"])
    assert "every candidate was truncated or empty" in first.warnings[0]
    assert first.exit_code == 0 and first.output  # the medoid, with a low quorum


def test_a_judge_prompt_larger_than_the_context_keeps_the_candidates(endpoint) -> None:
    result = run_vote("Name a colour.", vote_recipe(n=4))
    assert result.exit_code == 2 and len(texts(result)) == 4 and all(texts(result))
    error = result.details["error"]
    assert "the judge prompt, which holds every candidate, is larger than the context" in error
    assert "exceeds the available context size" in error and "lower -n" in error


def test_judge_sees_every_candidate_and_an_unusable_verdict_fails_clearly(
    real_build, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = vote_recipe(n=2, strategy="judge", top={"max_tokens": 6})
    # The judge's instructions need more than the shared server's 512 tokens per slot.
    with serve.start_server(*real_build, slots=2, ctx_per_slot=2048) as roomy:
        monkeypatch.setenv("OPENAI_BASE_URL", roomy.base_url)
        result = run_vote("Name a colour.", recipe, options=RunOptions(cache=False))
    assert result.exit_code == 1  # gibberish is no verdict, even after the one retry
    judge_calls = result.aggregate_calls
    assert len(judge_calls) == 2  # the verdict, and its one retry
    prompt = " ".join(
        " ".join(str(m["content"]) for m in judge_calls[0].task.request.messages).split()
    )
    # every candidate reached the judge (compared word by word: the judge prompt trims whitespace)
    assert all(" ".join(text.split()[:3]) in prompt for text in texts(result))


def test_rubric_hard_checks_reject_without_any_scoring_call(endpoint) -> None:
    criteria = [{"text": "clarity"}, {"max_chars": 1}]
    result = run_vote("Name a colour.", vote_recipe(n=3, strategy="rubric", criteria=criteria))
    assert result.exit_code == 3  # every candidate is longer than one character
    assert result.aggregate_calls == [] and len(result.results) == 3


def test_consensus_and_weighted_spread_over_an_ensemble(endpoint) -> None:
    models = [{"name": "tiny-a", "weight": 1}, {"name": "tiny-b", "weight": 3}]
    recipe = vote_recipe(n=4, strategy="weighted", top={"models": models, "model": None})
    result = run_vote("Name a colour.", recipe, options=RunOptions(cache=False))
    assert [t.request.model for t in result.tasks] == ["tiny-a", "tiny-b"] * 2
    assert len(result.results) == 4 and result.exit_code in (0, 3)
    consensus = vote_recipe(n=3, strategy="consensus", answer_pattern=r"ANSWER: (\w+)")
    split = run_vote("Name a colour.", consensus, options=RunOptions(cache=False))
    assert split.exit_code == 3  # random text never agrees on an extracted answer
