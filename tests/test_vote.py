"""`run_vote` end to end against the loopback server: judge, rubric, candidates, failures.

Tests that need to know which candidate got which text run with concurrency 1, so the scripted
replies (`times=1`, first match wins) are handed out in candidate order.
"""

from __future__ import annotations

import json
import re

import pytest
from llmserver import LLMServer, prompt_text
from votehelp import (
    JUDGE,
    SCORER,
    TASK,
    candidates,
    judge_requests,
    judge_says,
    recipe,
    shown_order,
)

from parallelize import RunOptions, run_vote

COLOURS = ["alpha red", "bravo green", "charlie blue"]


def test_judge_sees_a_shuffled_order_and_its_label_maps_back(llm: LLMServer) -> None:
    judge_says(llm, '{"winner": "B", "reason": "most vivid"}')
    candidates(llm, *COLOURS)
    result = run_vote(TASK, recipe(n=3, seed=4))
    [judge] = judge_requests(llm)
    order = shown_order(judge.last_user, COLOURS)
    assert order == result.details["permutation"] == [2, 0, 1]  # shuffled, and recorded
    assert result.details["winner"] == order[1] == 0  # label B = the candidate placed second
    assert result.output == "alpha red\n" and result.exit_code == 0
    assert result.details["reason"] == "judge (test-model) chose #1: most vivid"
    assert judge.body["temperature"] == 0 and TASK in judge.last_user
    assert len(result.aggregate_calls) == 1 and result.usage.prompt_tokens > 0


def test_the_default_seed_comes_from_the_request_so_reruns_match(llm: LLMServer) -> None:
    seeds, prompts = [], []
    for _ in range(2):
        llm.reset()
        judge_says(llm, '{"winner": "A"}')
        candidates(llm, *COLOURS)
        result = run_vote(TASK, recipe(n=3), options=RunOptions(cache=False))
        seeds.append(result.details["seed"])
        prompts.append(judge_requests(llm)[0].last_user)
    assert seeds[0] == seeds[1] and prompts[0] == prompts[1]
    other = run_vote("Name a fruit.", recipe(n=3)).details["seed"]
    assert other != seeds[0]


def test_an_unusable_verdict_is_retried_once_with_the_problem(llm: LLMServer) -> None:
    judge_says(llm, "I would go with the second one.", times=1)
    judge_says(llm, 'Sure.\n```json\n{"winner": "C", "reason": "calm"}\n```\nHope it helps!')
    candidates(llm, *COLOURS)
    result = run_vote(TASK, recipe(n=3, seed=4))
    first, retry = judge_requests(llm)
    assert retry.body["messages"][:2] == first.body["messages"]
    assert retry.body["messages"][2] == {
        "role": "assistant",
        "content": "I would go with the second one.",
    }
    assert "could not be used: no JSON object" in retry.last_user
    assert result.details["winner"] == 1 and result.exit_code == 0  # C = third shown = #2


def test_a_label_that_does_not_exist_fails_after_the_retry(llm: LLMServer) -> None:
    judge_says(llm, '{"winner": "Z", "reason": "?"}')
    candidates(llm, *COLOURS)
    result = run_vote(TASK, recipe(n=3))
    assert len(judge_requests(llm)) == 2
    assert result.exit_code == 1 and result.output == ""
    assert "verdict was unusable after a retry" in result.details["error"]
    assert "'Z', which is not one of the labels A, B, C" in result.details["error"]
    assert [c["text"] for c in result.details["candidates"]] == COLOURS  # nothing lost


def pick(text: str):
    """A judge reply that names whichever label holds `text` in this round's order."""

    def reply(body: dict) -> str:
        label = re.search(rf'<candidate label="([A-Z]+)">\n{text}\n', prompt_text(body))
        return json.dumps({"winner": label.group(1) if label else "?", "reason": f"{text}!"})

    return reply


def test_judge_rounds_use_distinct_orders_and_the_majority_wins(llm: LLMServer) -> None:
    judge_says(llm, pick("bravo green"), times=2)
    judge_says(llm, pick("alpha red"))
    candidates(llm, *COLOURS)
    result = run_vote(TASK, recipe(n=3, judge_rounds=3))
    orders = [tuple(shown_order(r.last_user, COLOURS)) for r in judge_requests(llm)]
    assert len(orders) == 3 and len(set(orders)) == 3
    assert [r["order"] for r in result.details["rounds"]] == [list(o) for o in orders]
    assert {r.body.get("temperature") for r in judge_requests(llm)} == {0}
    assert result.details["winner"] == 1 and result.details["share"] == pytest.approx(
        2 / 3, abs=1e-3
    )
    assert [c["votes"] for c in result.details["candidates"]] == [1, 2, 0]
    assert result.details["reason"].startswith("judge: 2 of 3 rounds chose #2: bravo green!")


def test_split_judges_break_the_tie_by_candidate_order(llm: LLMServer) -> None:
    judge_says(llm, pick("charlie blue"), times=1)
    judge_says(llm, pick("bravo green"))
    candidates(llm, *COLOURS)
    result = run_vote(TASK, recipe(n=3, judge_rounds=2))
    assert result.details["winner"] == 1 and result.details["tie"] == [1, 2]
    assert "tie between #2, #3, broken by candidate order" in result.details["reason"]


def test_hard_checks_put_candidates_out_before_the_judge_sees_them(llm: LLMServer) -> None:
    judge_says(llm, '{"winner": "A"}')
    candidates(llm, "alpha red!", *COLOURS[1:])
    criteria = [{"must_not_include": "!"}, {"text": "Vivid", "weight": 2}]
    result = run_vote(TASK, recipe(n=3, criteria=criteria))
    [judge] = judge_requests(llm)
    assert "alpha red" not in judge.last_user and 'label="C"' not in judge.last_user
    assert "Judge by these criteria (most important first):\n- Vivid" in judge.last_user
    assert result.details["winner"] in (1, 2)


def test_an_unknown_judge_model_keeps_the_candidates_and_exits_2(llm: LLMServer) -> None:
    candidates(llm, *COLOURS)
    result = run_vote(TASK, recipe(n=3, judge_model="no-such-judge"))
    assert result.exit_code == 2 and result.output == ""
    assert "the judge calls failed: HTTP 404" in result.details["error"]
    assert [c["text"] for c in result.details["candidates"]] == COLOURS


def test_a_judge_prompt_beyond_the_context_window_names_a_fix(llm: LLMServer) -> None:
    llm.context_window = 100  # room for each candidate's request, not for all of them at once
    result = run_vote(TASK, recipe(n=3))
    assert result.exit_code == 2 and len(llm.requests) == 4
    assert result.details["error"].startswith(
        "the judge prompt, which holds every candidate, is larger than the context window of "
        "test-model (HTTP 400: request ("
    )
    assert "lower -n or --max-tokens" in result.details["error"]


def test_the_judge_model_may_differ_from_the_workers(llm: LLMServer) -> None:
    llm.models = ["test-model", "judge-model"]
    judge_says(llm, '{"winner": "A"}')
    run_vote(TASK, recipe(n=2, judge_model="judge-model"))
    assert [r.body["model"] for r in llm.requests] == ["test-model", "test-model", "judge-model"]


def scores(llm: LLMServer, text: str, *values: float) -> None:
    """Script the scorer's reply for the candidate whose text is `text`."""
    reply = json.dumps({"scores": {str(i): v for i, v in enumerate(values, 1)}, "reason": "ok"})
    llm.script(lambda body: SCORER in prompt_text(body) and text in prompt_text(body), reply)


HEADLINES = ["Acme ships fast", "Acme ships a rocket that is far too long to fit", "Acme lands"]
RUBRIC = [
    {"text": "Accurate", "weight": 3},
    {"text": "Punchy", "weight": 1},
    {"max_chars": 30},
]


def test_rubric_checks_eliminate_without_a_call_and_weights_decide(llm: LLMServer) -> None:
    scores(llm, HEADLINES[0], 5, 10)  # plain mean 7.5, weighted 6.25
    scores(llm, HEADLINES[2], 8, 3)  # plain mean 5.5, weighted 6.75
    candidates(llm, *HEADLINES)
    result = run_vote(TASK, recipe(n=3, strategy="rubric", criteria=RUBRIC))
    assert len(llm.requests) == 3 + 2  # no scoring call for the candidate the check put out
    assert llm.count(HEADLINES[1]) == 0  # the scorers never saw it
    assert result.details["winner"] == 2 and result.output == "Acme lands\n"
    rows = result.details["candidates"]
    assert rows[1]["excluded"] == "failed check: 47 chars > max_chars 30"
    assert rows[0]["scores"] == {"Accurate": 5, "Punchy": 10} and rows[0]["score"] == 6.25
    assert rows[2]["score"] == 6.75 and rows[2]["note"] == "ok"
    assert result.details["reason"] == "rubric: #3 scored 6.75/10: ok"


def test_rubric_ties_go_to_the_earliest_and_are_reported(llm: LLMServer) -> None:
    scores(llm, "Ahab", 7, 7)
    scores(llm, "Bilbo", 9, 9)
    scores(llm, "Circe", 9, 9)
    candidates(llm, "Ahab", "Bilbo", "Circe")
    result = run_vote(TASK, recipe(n=3, strategy="rubric", criteria=RUBRIC[:2]))
    assert result.details["winner"] == 1 and result.details["tie"] == [1, 2]
    assert "tie between #2, #3" in result.details["reason"]


def test_every_candidate_rejected_by_hard_checks_is_exit_3(llm: LLMServer) -> None:
    candidates(llm, "Wow!", "Amazing!")
    rubric = [{"text": "Good"}, {"must_not_include": "!"}]
    result = run_vote(TASK, recipe(n=2, strategy="rubric", criteria=rubric))
    assert result.exit_code == 3 and result.output == ""
    assert result.details["error"] == "every candidate failed the rubric's hard checks"
    assert len(llm.requests) == 2  # no scorer call at all


def test_soft_checks_score_instead_of_eliminating(llm: LLMServer) -> None:
    candidates(llm, "Wow!", "Calm")
    rubric = [{"must_not_include": "!", "hard": False}]
    result = run_vote(TASK, recipe(n=2, strategy="rubric", criteria=rubric))
    assert result.details["winner"] == 1 and len(llm.requests) == 2
    assert [c["score"] for c in result.details["candidates"]] == [1, 10]


def test_unusable_scores_are_retried_then_the_candidate_is_out(llm: LLMServer) -> None:
    scores(llm, "good", 8)
    llm.script(SCORER, "ten out of ten")
    candidates(llm, "good", "vague")
    result = run_vote(TASK, recipe(n=2, strategy="rubric", criteria=["Clear"]))
    assert llm.count(SCORER) == 3  # two scores, one retry for the unusable one
    assert result.details["winner"] == 0 and result.exit_code == 0
    assert result.details["candidates"][1]["excluded"].startswith("scores unusable after a retry")
    assert "1 candidate(s) could not be scored" in result.warnings[-1]


def test_candidates_run_concurrently_as_distinct_samples(llm: LLMServer) -> None:
    llm.latency = 0.3
    result = run_vote(TASK, recipe(n=4, strategy="consensus", concurrency=8))
    assert llm.peak_concurrency == 4 and len(llm.requests) == 4
    assert [t.request.sample for t in result.tasks] == [0, 1, 2, 3]
    bodies = [r.body for r in llm.requests]
    assert all(b["temperature"] == 0.8 and "n" not in b for b in bodies)
    assert len({json.dumps(b, sort_keys=True) for b in bodies}) == 1  # identical requests
    assert result.warnings == []


def test_settings_a_strategy_ignores_are_named(llm: LLMServer) -> None:
    result = run_vote(TASK, recipe(n=2, strategy="consensus", judge_rounds=3, criteria=["x"]))
    assert result.warnings == [
        "judge_rounds does not apply to the consensus strategy and is ignored",
        "criteria does not apply to the consensus strategy and is ignored",
    ]


def test_temperature_zero_with_one_model_warns(llm: LLMServer) -> None:
    result = run_vote(TASK, recipe(n=3, strategy="consensus", temperature=0))
    assert {r.body["temperature"] for r in llm.requests} == {0}
    assert "temperature 0: the candidates will likely be identical" in result.warnings[0]


def test_a_fixed_seed_becomes_seed_plus_sample(llm: LLMServer) -> None:
    result = run_vote(TASK, recipe(n=3, strategy="consensus", seed=100))
    assert sorted(r.body["seed"] for r in llm.requests) == [100, 101, 102]
    assert result.details["seed"] == 100


def test_models_that_reject_temperature_get_none(llm: LLMServer) -> None:
    unsupported = {
        "message": "Unsupported parameter: 'temperature' is not supported with this model.",
        "type": "invalid_request_error",
        "param": "temperature",
    }
    llm.script(lambda body: "temperature" in body, status=400, error=unsupported)
    judge_says(llm, '{"winner": "A"}')
    result = run_vote(TASK, recipe(n=3, concurrency=3))
    assert result.exit_code == 0 and result.failed == [] and result.details["winner"] is not None
    answered = [r for r in llm.requests if r.status == 200]
    assert len(answered) == 4 and all("temperature" not in r.body for r in answered)
    assert sum(r.status == 400 for r in llm.requests) <= 3  # at most the ones already in flight


def test_a_rejected_parameter_is_dropped_only_for_the_model_that_rejects_it(
    llm: LLMServer,
) -> None:
    llm.models = ["small", "big"]
    unsupported = {
        "message": "Unsupported parameter: 'temperature' is not supported with this model.",
        "type": "invalid_request_error",
        "param": "temperature",
    }
    llm.script(
        lambda body: body["model"] == "big" and "temperature" in body, status=400, error=unsupported
    )
    judge_says(llm, '{"winner": "A"}')
    models = [{"name": "big"}, {"name": "small"}]
    result = run_vote(TASK, recipe(n=4, models=models, judge_model="small"))
    assert result.exit_code == 0 and result.failed == []
    answered = [r for r in llm.requests if r.status == 200]
    assert all("temperature" not in r.body for r in answered if r.body["model"] == "big")
    small = [r for r in answered if r.body["model"] == "small"]
    assert len(small) == 3 and all("temperature" in r.body for r in small)  # 2 candidates, judge
    assert judge_requests(llm)[0].body["temperature"] == 0


def test_n1_needs_no_vote(llm: LLMServer) -> None:
    candidates(llm, "the only one")
    result = run_vote(TASK, recipe(n=1))
    assert result.output == "the only one\n" and len(llm.requests) == 1
    assert result.details["strategy"] == "none"
    assert result.details["reason"] == "n=1: no vote needed, returning the single answer"


def test_failures_leave_a_vote_when_enough_candidates_succeed(llm: LLMServer) -> None:
    judge_says(llm, '{"winner": "A"}')
    llm.script(lambda body: JUDGE not in prompt_text(body), status=500, times=1)
    result = run_vote(TASK, recipe(n=3), options=RunOptions(max_retries=0))
    assert result.exit_code == 0 and result.details["winner"] in (1, 2)
    assert result.warnings == [
        "1 of 3 candidates failed and do not vote: #1 (HTTP 500: Internal Server Error "
        "(scripted status 500 from the loopback server))"
    ]
    assert result.details["candidates"][0]["excluded"].startswith("failed: HTTP 500")


def test_too_few_candidates_or_all_failing_is_exit_1(llm: LLMServer) -> None:
    llm.script(lambda body: JUDGE not in prompt_text(body), status=503, times=2)
    result = run_vote(TASK, recipe(n=3), options=RunOptions(max_retries=0))
    assert result.exit_code == 1 and result.output == ""
    assert "only 1 of 3 candidates succeeded; the vote needs at least 2" in result.details["error"]
    assert llm.count(JUDGE) == 0
    llm.reset()
    llm.script(None, status=503)
    result = run_vote(TASK, recipe(n=2), options=RunOptions(max_retries=0))
    assert result.exit_code == 1 and result.details["error"] == "all 2 candidates failed"
    assert all("HTTP 503" in c["excluded"] for c in result.details["candidates"])


def test_truncated_candidates_never_win_silently(llm: LLMServer) -> None:
    judge_says(llm, '{"winner": "A"}')
    candidates(llm, "cut sh", finish_reason="length")
    candidates(llm, "complete one", "complete two")
    result = run_vote(TASK, recipe(n=3))
    assert result.details["winner"] in (1, 2)
    assert result.details["candidates"][0]["excluded"] == "truncated (length)"
    assert "excluded truncated or empty candidate(s) #1" in result.warnings
    assert "cut sh" not in judge_requests(llm)[0].last_user


def test_when_every_candidate_is_truncated_they_still_vote(llm: LLMServer) -> None:
    judge_says(llm, '{"winner": "B"}')
    candidates(llm, "cut one", "cut two", finish_reason="length")
    result = run_vote(TASK, recipe(n=2))
    assert result.exit_code == 0 and result.details["winner"] is not None
    assert "every candidate was truncated or empty" in result.warnings[0]


@pytest.mark.parametrize(
    ("reply", "finish", "reason"), [("cut sh", "length", "length"), ("", "stop", "empty reply")]
)
def test_a_truncated_or_empty_single_answer_is_reported(
    llm: LLMServer, reply: str, finish: str, reason: str
) -> None:
    candidates(llm, reply, finish_reason=finish)
    result = run_vote(TASK, recipe(n=1))
    assert result.exit_code == 0 and result.output == reply + "\n"
    assert result.warnings == [
        f"the only candidate was truncated ({reason}); returning it anyway "
        "(raise max_tokens for a complete answer)"
    ]
    assert result.details["candidates"][0]["status"] == "truncated"


def test_dry_run_plans_candidates_and_judge_calls_and_sends_nothing(llm: LLMServer) -> None:
    result = run_vote(TASK, recipe(n=4, judge_rounds=2), options=RunOptions(dry_run=True))
    assert llm.all_requests == [] and result.dry_run and len(result.tasks) == 4
    assert result.details["planned_calls"] == [
        {"kind": "candidate", "model": "test-model", "count": 4},
        {"kind": "judge", "model": "test-model", "count": 2},
        {"kind": "judge retry (only if unusable)", "model": "test-model", "count": 2},
    ]


def test_the_judge_runs_at_temperature_0_even_when_its_entry_sets_one(llm: LLMServer) -> None:
    llm.models = ["small", "big"]
    judge_says(llm, '{"winner": "A"}')
    models = [{"name": "small"}, {"name": "big", "params": {"temperature": 0.9, "top_p": 0.5}}]
    result = run_vote(TASK, recipe(n=2, models=models, judge_model="big"))
    assert result.exit_code == 0
    [judge] = judge_requests(llm)
    assert judge.body["temperature"] == 0 and judge.body["top_p"] == 0.5
    big = [r for r in llm.requests if r.body["model"] == "big" and r not in (judge,)]
    assert [r.body["temperature"] for r in big] == [0.9]  # the candidate keeps its own
