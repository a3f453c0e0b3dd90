"""Consensus and weighted votes, ensembles across models and endpoints, configuration errors."""

from __future__ import annotations

from typing import Any

import pytest
from llmserver import LLMServer
from votehelp import TASK, candidates, recipe

from parallelize import RunOptions, run_vote
from parallelize.cli.vote_flags import apply_vote_flags
from parallelize.errors import ConfigError, EndpointError, RecipeError
from parallelize.recipe.model import Recipe

PATTERN = r"ANSWER:\s*(\S+)"


def consensus(**vote: Any) -> Recipe:
    return recipe(strategy="consensus", answer_pattern=PATTERN, **vote)


def test_consensus_extracts_the_final_answer_and_takes_the_majority(llm: LLMServer) -> None:
    candidates(llm, "6*7... ANSWER: 41? no. ANSWER: 42", "ANSWER:  42 ", "I think ANSWER: 41")
    result = run_vote(TASK, consensus(n=3))
    assert result.exit_code == 0 and result.details["winner"] == 0
    assert result.output == "6*7... ANSWER: 41? no. ANSWER: 42\n"  # the whole winning candidate
    assert result.details["match"] == "exact" and result.details["share"] == pytest.approx(0.6667)
    assert [c["answer"] for c in result.details["candidates"]] == ["42", "42", "41"]
    assert [c["votes"] for c in result.details["candidates"]] == [2, 2, 1]
    assert result.details["split"] == [
        {"answer": "42", "candidates": [0, 1], "votes": 2, "share": 0.6667},
        {"answer": "41", "candidates": [2], "votes": 1, "share": 0.3333},
    ]
    assert result.details["reason"] == "consensus: '42' from 2 of 3 (67%, quorum > 50%)"
    assert len(llm.requests) == 3  # consensus needs no model call of its own


def test_output_answer_prints_only_the_agreed_answer(llm: LLMServer) -> None:
    candidates(llm, "work\nANSWER: Paris", "ANSWER: paris")
    result = run_vote(TASK, consensus(n=2, output="answer"))
    assert result.output == "Paris\n"  # case-folded for matching, printed as written


def test_quorum_not_reached_is_exit_3_with_the_split(llm: LLMServer) -> None:
    candidates(llm, "ANSWER: 42", "ANSWER: 42", "ANSWER: 41")
    result = run_vote(TASK, consensus(n=3, quorum=0.9))
    assert result.exit_code == 3 and result.output == "" and result.details["winner"] is None
    assert result.details["error"] == (
        "no consensus: the best answer has 67% of the votes, the quorum needs >= 90%"
    )
    assert [row["answer"] for row in result.details["split"]] == ["42", "41"]


def test_a_tie_at_the_top_is_no_consensus(llm: LLMServer) -> None:
    candidates(llm, "ANSWER: 1", "ANSWER: 2", "ANSWER: 2", "ANSWER: 1")
    result = run_vote(TASK, consensus(n=4, quorum=0.5))
    assert result.exit_code == 3
    assert result.details["error"] == "no consensus: tie at the top between '1' vs '2'"


def test_share_counts_the_n_requested_not_the_survivors(llm: LLMServer) -> None:
    llm.script(None, status=500, times=2)
    candidates(llm, "ANSWER: 7", "ANSWER: 7")
    result = run_vote(TASK, consensus(n=4), options=RunOptions(max_retries=0))
    assert result.exit_code == 3  # 2 of 4 is not more than half, although both survivors agree
    assert result.details["share"] == 0.5
    assert "2 of 4 candidates failed and do not vote" in result.warnings[0]


def test_candidates_without_an_answer_abstain(llm: LLMServer) -> None:
    candidates(llm, "ANSWER: 3", "no idea", "ANSWER: 3")
    result = run_vote(TASK, consensus(n=3))
    assert result.details["winner"] == 0
    assert result.details["candidates"][1]["excluded"] == "no answer matching answer_pattern"


SENTENCES = [
    "The capital of France is Paris.",
    "Berlin is the capital of Germany.",
    "Paris is the capital of France.",
    "the capital of france is paris",
]


def test_similar_matching_clusters_free_text_and_picks_the_medoid(llm: LLMServer) -> None:
    candidates(llm, *SENTENCES)
    result = run_vote(TASK, recipe(n=4, strategy="consensus"))
    assert result.details["match"] == "similar" and result.details["similarity_threshold"] == 0.8
    assert result.details["split"][0]["candidates"] == [0, 2, 3]
    assert result.details["winner"] in (0, 3) and result.details["share"] == 0.75
    assert 0 < result.details["agreement"] < 1
    assert "agreement" in result.details["reason"]


def test_free_text_where_nobody_agrees_falls_back_to_the_medoid(llm: LLMServer) -> None:
    texts = ["red green blue", "red green", "green blue"]
    candidates(llm, *texts)
    failed = run_vote(TASK, recipe(n=3, strategy="consensus", similarity=0.95))
    assert failed.exit_code == 3 and "no two candidates agree" in failed.details["reason"]
    llm.reset()
    candidates(llm, *texts)
    result = run_vote(TASK, recipe(n=3, strategy="consensus", similarity=0.95, quorum=0.3))
    assert result.exit_code == 0 and result.details["winner"] == 0  # most like the others


def ensemble(strategy: str, **weights: float) -> Recipe:
    models = [{"name": "small", "weight": weights.get("small", 1)}, {"name": "big"}]
    if "big" in weights:
        models[1]["weight"] = weights["big"]
    return recipe(n=3, strategy=strategy, answer_pattern=PATTERN, models=models)


def by_model(llm: LLMServer) -> None:
    llm.models = ["small", "big"]
    llm.script(lambda body: body["model"] == "small", "ANSWER: x")
    llm.script(lambda body: body["model"] == "big", "ANSWER: y")


def test_ensembles_spread_attempts_round_robin(llm: LLMServer) -> None:
    by_model(llm)
    result = run_vote(TASK, ensemble("consensus"))
    assert [r.body["model"] for r in llm.requests] == ["small", "big", "small"]
    assert result.details["winner"] == 0 and result.output == "ANSWER: x\n"
    assert result.model == "small, big"


def test_weighted_vote_flips_the_plain_majority_when_weights_say_so(llm: LLMServer) -> None:
    by_model(llm)
    result = run_vote(TASK, ensemble("weighted", big=3))
    assert result.details["winner"] == 1 and result.output == "ANSWER: y\n"
    assert result.details["share"] == 0.6  # 3 of 5
    assert result.details["reason"] == "weighted vote: 'y' from 3 of 5 weight (60%, quorum > 50%)"
    assert [c["weight"] for c in result.details["candidates"]] == [1, 3, 1]


def test_weighted_with_equal_weights_warns_it_is_a_consensus(llm: LLMServer) -> None:
    by_model(llm)
    result = run_vote(TASK, ensemble("weighted"))
    assert result.details["winner"] == 0
    assert "every model has the same weight" in result.warnings[0]


def test_command_line_weights_must_name_a_model() -> None:
    base = ensemble("weighted")
    assert [m.weight for m in apply_vote_flags(base, weights={"big": 4}).models or ()] == [1, 4]
    with pytest.raises(ConfigError, match=r"--weight nope=...: no model named 'nope'") as err:
        apply_vote_flags(base, weights={"nope": 2})
    assert err.value.exit_code == 2
    chosen = apply_vote_flags(base, models=["big", "other"])
    assert [(m.name, m.weight) for m in chosen.models or ()] == [("big", 1), ("other", 1)]


def test_ensemble_entries_reach_their_own_endpoints_with_their_own_keys(
    llm: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm.models = ["test-model", "keyed", "keyless"]
    monkeypatch.setenv("KEYED_API_KEY", "sk-keyed-0000")
    models = [
        "test-model",
        {"name": "keyed", "base_url": llm.url, "api_key_env": "KEYED_API_KEY"},
        {"name": "keyless", "base_url": llm.url + "/", "params": {"top_p": 0.5}},
    ]
    run_vote(TASK, recipe(n=3, strategy="consensus", models=models))
    seen = {r.body["model"]: r for r in llm.requests}
    assert seen["test-model"].path == "/v1/chat/completions"
    assert seen["test-model"].headers["authorization"] == "Bearer sk-test-loopback-key-0000"
    assert seen["keyed"].path == "/chat/completions"  # its own base URL (no /v1)
    assert seen["keyed"].headers["authorization"] == "Bearer sk-keyed-0000"
    assert "authorization" not in seen["keyless"].headers  # our key never goes elsewhere
    assert seen["keyless"].body["top_p"] == 0.5 and "top_p" not in seen["keyed"].body


def test_a_missing_api_key_env_stops_before_any_request(llm: LLMServer) -> None:
    models = ["test-model", {"name": "keyed", "api_key_env": "NOT_SET_ANYWHERE_API_KEY"}]
    with pytest.raises(EndpointError, match="api_key_env NOT_SET_ANYWHERE_API_KEY is not set"):
        run_vote(TASK, recipe(n=2, models=models))
    assert llm.requests == []


@pytest.mark.parametrize(
    ("task", "vote", "message"),
    [
        (None, {}, "missing TASK"),
        ("  ", {}, "TASK is empty"),
        (TASK, {"strategy": "rubric"}, "vote.strategy rubric needs criteria"),
        (TASK, {"n": 2, "min_candidates": 3}, "min_candidates (3) is more than n (2)"),
    ],
)
def test_configuration_errors_come_before_any_request(
    llm: LLMServer, task: str | None, vote: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        run_vote(task, recipe(**vote))
    assert err.value.exit_code == 2 and llm.all_requests == []
    assert isinstance(err.value, (ConfigError, RecipeError))


def test_a_recipe_may_carry_the_whole_task(llm: LLMServer) -> None:
    whole = Recipe.model_validate(
        {"mode": "vote", "model": "test-model", "prompt": "Name a prime.", "vote": {"n": 1}}
    )
    result = run_vote(None, whole)
    assert result.exit_code == 0 and llm.requests[0].last_user == "Name a prime."
