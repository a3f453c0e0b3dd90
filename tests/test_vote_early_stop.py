"""`vote --early-stop` and `--confidence`: the certainty check against brute force, the waves
against the loopback server, the flags, the JSON keys and the dry run."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
from llmserver import LLMServer
from typer.testing import CliRunner
from votehelp import TASK, recipe

from parallelize import RunOptions, run_vote
from parallelize.cli.app import app
from parallelize.errors import BudgetError, ConfigError
from parallelize.records import Completion, RunResult, TaskResult, Usage
from parallelize.vote.certainty import Rule, Sample, next_wave, settled
from parallelize.vote.confidence import leader_probability
from parallelize.vote.decide import decide
from parallelize.vote.setup import VoteSetup, prepare_vote
from parallelize.vote.waves import Drawing, as_sample, sample_weights

PATTERN = r"ANSWER:\s*(\S+)"

# ---- the certainty check is exact: brute force over every completion, decided by the vote ----

#: Answers a sample may give; one the drawn samples have not used is a new answer the rest could
#: agree on. Besides: "none" (no answer matches), "fail" (the call failed), "cutA" (answer A cut
#: by max_tokens, which votes only if every candidate is cut).
LETTERS = {"A", "B", "C"}


def reply(setup: VoteSetup, index: int, outcome: str) -> TaskResult:
    """The result sample `index` would have if it turned out as `outcome`."""
    task = setup.tasks[index]
    if outcome == "fail":
        return TaskResult(task, None, error="HTTP 500", attempts=1)
    text = {"none": "no idea", "cutA": "ANSWER: A"}.get(outcome, f"ANSWER: {outcome}")
    finish = "length" if outcome.startswith("cut") else "stop"
    return TaskResult(task, Completion(text, finish, Usage(), task.request.model), attempts=1)


def verdict(result: RunResult) -> tuple[int | None, int]:
    """What must not change: the winner (so the printed text) and the exit code."""
    return result.details["winner"], result.exit_code


def judged(setup: VoteSetup, results: list[TaskResult], sampling: str = "all") -> tuple:
    # Consensus and weighted votes never call a model, so no executor is needed to decide them.
    return verdict(decide(Drawing(results, sampling), setup, None))  # type: ignore[arg-type]


def vote_setup(n: int, **vote: Any) -> VoteSetup:
    kind = vote.pop("strategy", "consensus")
    made = recipe(n=n, strategy=kind, answer_pattern=PATTERN, early_stop=True, **vote)
    return prepare_vote(TASK, made, env_model=None).resolve("test-model")


#: Vote settings, and the outcomes each sample ranges over (5 samples: up to 5^5 full runs).
SCENARIOS = {
    "majority": ({}, ("A", "B", "C", "fail", "cutA")),
    "quorum 0.8": ({"quorum": 0.8}, ("A", "B", "C", "none", "fail")),
    "quorum 0.4, min 3": ({"quorum": 0.4, "min_candidates": 3}, ("A", "B", "none", "fail", "cutA")),
    "weighted 2.5/1": (
        {
            "strategy": "weighted",
            "models": [{"name": "big", "weight": 2.5}, {"name": "small"}],
            "quorum": 0.6,
        },
        ("A", "B", "C", "fail"),
    ),
    "weighted 0.5/1/1": (
        {"strategy": "weighted", "models": [{"name": "a", "weight": 0.5}, "b", "c"]},
        ("A", "B", "C", "fail"),
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_settled_vote_is_the_full_votes_result_whatever_the_rest_say(name: str) -> None:
    """The proof: whenever `settled` says stop, every completion of the remaining samples gives
    the full run the winner and exit code the stopped vote reports; and whenever it says go on
    (with a clean candidate drawn, and a letter left for a new answer), two completions disagree,
    so no sample is drawn in vain."""
    vote, outcomes = SCENARIOS[name]
    n = 5
    setup = vote_setup(n, **vote)
    weights = sample_weights(setup)
    rule = Rule(setup.recipe.vote.quorum, setup.recipe.vote.min_candidates)
    pattern = re.compile(PATTERN)
    full = {
        combo: judged(setup, [reply(setup, i, o) for i, o in enumerate(combo)])
        for combo in itertools.product(outcomes, repeat=n)
    }
    stops = goes = 0
    for size in range(1, n):
        for prefix in itertools.product(outcomes, repeat=size):
            drawn = [reply(setup, i, o) for i, o in enumerate(prefix)]
            samples = [as_sample(r, w, pattern) for r, w in zip(drawn, weights[:size], strict=True)]
            ends = {full[prefix + rest] for rest in itertools.product(outcomes, repeat=n - size)}
            if settled(samples, weights[size:], rule):
                stops += 1
                assert ends == {judged(setup, drawn, "certain")}, (prefix, ends)
            else:
                goes += 1
                clean = any(s.succeeded and not s.truncated for s in samples)
                spare = LETTERS & set(outcomes) - set(prefix)
                assert len(ends) > 1 or not clean or not spare, (prefix, ends)
    assert stops and goes  # both branches were exercised


def test_next_wave_is_the_fewest_that_could_settle() -> None:
    rule = Rule(None, 2)
    agree = [Sample(1.0, "a")] * 8
    assert settled(agree, [1.0] * 7, rule)  # 8 of 15 agree: the rest cannot outvote them
    split = [Sample(1.0, "a")] * 6 + [Sample(1.0, "b")] * 2
    assert not settled(split, [1.0] * 7, rule)
    assert next_wave(split, [1.0] * 7, rule, cap=8) == 2  # two more for a: 8 > 2 + 5
    assert next_wave(split, [1.0] * 7, rule, cap=1) == 1
    quorum = Rule(0.8, 2)  # 12 of 15 needed: at least 4 more even if all agree
    assert next_wave(agree, [1.0] * 7, quorum, cap=8) == 4
    missed = [Sample(1.0, "a")] * 4 + [Sample(1.0, "b")] * 4  # 12 is out of reach for anyone
    assert settled(missed, [1.0] * 7, quorum)
    heavy = Rule(None, 1)  # weighted: what the remaining samples' models weigh is what counts
    assert not settled([Sample(1.0, "a")] * 2, [3.0], heavy)
    assert settled([Sample(1.0, "a")] * 2, [0.5, 0.5], heavy)


def test_confidence_is_a_seeded_estimate_of_the_leader_winning() -> None:
    rule = Rule(None, 2)
    four = [Sample(1.0, "a")] * 4
    chance = leader_probability(four, [1.0] * 11, rule, seed=7)
    assert 0.9 < chance < 1 and chance == leader_probability(four, [1.0] * 11, rule, seed=7)
    close = [Sample(1.0, "a")] * 3 + [Sample(1.0, "b")] * 2
    assert leader_probability(close, [1.0] * 10, rule, seed=7) < 0.8
    tied = [Sample(1.0, "a"), Sample(1.0, "b")]
    assert leader_probability(tied, [1.0] * 3, rule, seed=7) == 0.0  # no leader to back


# ---- waves against the loopback server ----

SEED = 100


def answers(llm: LLMServer, said: Sequence[str]) -> None:
    """Sample i answers said[i] whatever the order of arrival (attempt i sends seed 100 + i)."""
    llm.script(None, lambda body: f"Thinking...\nANSWER: {said[body['seed'] - SEED]}")


def early(n: int, **vote: Any) -> Any:
    """A consensus vote with early stop at the default concurrency (8)."""
    vote = {"strategy": "consensus", "answer_pattern": PATTERN, "early_stop": True, **vote}
    return recipe(n=n, seed=SEED, concurrency=vote.pop("concurrency", None), **vote)


def test_when_all_agree_one_wave_of_8_decides_15(llm: LLMServer) -> None:
    answers(llm, ["Paris"] * 15)
    result = run_vote(TASK, early(15))
    assert result.exit_code == 0 and result.details["winner"] == 0
    assert llm.count() == 8 and len(result.results) == 8
    details = result.details
    assert (details["samples_drawn"], details["samples_saved"], details["sampling"]) == (
        8,
        7,
        "certain",
    )
    assert details["share"] == pytest.approx(8 / 15, abs=1e-4)  # votes / N requested
    assert details["reason"] == (
        "consensus: 'Paris' from 8 of 15 (53%, quorum > 50%); stopped after 8 of 15 samples: "
        "the other 7 cannot change it"
    )
    llm.clear()  # the full run takes the 8 drawn from the cache and sends only the other 7
    full = run_vote(TASK, early(15, early_stop=False))
    assert llm.count() == 7 and full.details["winner"] == 0 and full.output == result.output
    assert (full.details["samples_drawn"], full.details["samples_saved"]) == (15, 0)
    assert sorted(r.body["seed"] - SEED for r in llm.requests) == list(range(8, 15))


def test_a_budget_all_n_could_exceed_is_refused_before_the_first_wave(llm: LLMServer) -> None:
    """--max-cost holds the early-stopping vote to all N, as the full vote: the waves may draw
    them all. Samples the cache already holds cost nothing, so a warm re-run is not refused."""
    answers(llm, ["Paris"] * 15)
    budget = RunOptions(max_cost=0.0001, price_in=10.0, price_out=10.0, max_retries=0)
    for vote in (early(15), early(15, early_stop=False)):
        with pytest.raises(BudgetError, match="15 call"):
            run_vote(TASK, vote, options=budget)
    assert llm.count() == 0
    run_vote(TASK, early(15, early_stop=False))  # all 15 in the cache now
    llm.clear()
    result = run_vote(TASK, early(15), options=budget)
    assert result.exit_code == 0 and llm.count() == 0


def test_a_split_draws_only_the_samples_that_could_settle_it(llm: LLMServer) -> None:
    said = ["A"] * 15
    for i in (2, 7, 12):  # 80% agree
        said[i] = "B"
    answers(llm, said)
    result = run_vote(TASK, early(15))
    # wave 1: A 6, B 2, 7 to come; two more for A would make 8 > 2 + 5, so wave 2 is 2 samples
    assert llm.count() == 10 and result.details["samples_saved"] == 5
    llm.clear()
    full = run_vote(TASK, early(15, early_stop=False))
    assert full.details["winner"] == result.details["winner"] == 0 and llm.count() == 5


def test_a_quorum_keeps_sampling_until_it_is_decided_either_way(llm: LLMServer) -> None:
    answers(llm, ["A"] * 15)
    reached = run_vote(TASK, early(15, quorum=0.8))  # 12 of 15 needed: 8, then 4 more
    assert reached.exit_code == 0 and llm.count() == 12
    assert reached.details["share"] == pytest.approx(0.8)
    llm.reset()
    answers(llm, ["A", "B"] * 7 + ["A"])
    missed = run_vote(TASK, early(15, quorum=0.8), options=RunOptions(cache=False))
    # A 4, B 4 after wave 1: 4 + 7 < 12, so neither can reach the quorum
    assert missed.exit_code == 3 and llm.count() == 8
    assert missed.details["winner"] is None  # the reason describes the 8 drawn: a tie
    assert missed.details["reason"].endswith(
        "stopped after 8 of 15 samples: the other 7 cannot change it"
    )


def test_failures_count_against_the_share_as_in_a_full_run(llm: LLMServer) -> None:
    llm.script(lambda body: body["seed"] - SEED in (0, 1), status=500)
    answers(llm, ["A"] * 6)
    result = run_vote(TASK, early(6, concurrency=2), options=RunOptions(max_retries=0))
    # 2 failed of 6: A needs 4 of 6, so all four others are drawn (waves of 2, 2, 2)
    assert result.exit_code == 0 and llm.count() == 6 and result.details["samples_saved"] == 0


def test_confidence_stops_sooner_and_says_the_result_may_differ(llm: LLMServer) -> None:
    answers(llm, ["A"] * 15)
    exact = run_vote(TASK, early(15, concurrency=4))
    assert llm.count() == 8  # 4, then 4 more: A 8 > 7
    llm.reset()
    answers(llm, ["A"] * 15)
    confident = early(15, concurrency=4, early_stop=None, confidence=0.9)  # implies it
    guess = run_vote(TASK, confident, options=RunOptions(cache=False))
    assert guess.exit_code == 0 and llm.count() == 4 and exact.details["winner"] == 0
    assert guess.details["sampling"] == "confident" and guess.details["share"] == 1.0
    assert "the full run may pick differently" in guess.details["reason"]
    assert "stopped after 4 of 15 samples" in guess.details["reason"]


# ---- flags, messages, JSON and the dry run ----


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def consensus_args(*more: str) -> list[str]:
    return ["vote", TASK, "-s", "consensus", "-n", "15", "--seed", str(SEED), *more]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["vote", TASK, "--early-stop"],
            "error: --early-stop (vote.early_stop) works with the consensus and weighted "
            "strategies only (the judge strategy needs every candidate): use --strategy "
            "consensus, or drop --early-stop",
        ),
        (
            ["vote", TASK, "-s", "rubric", "--criterion", "Clear", "--confidence", "0.9"],
            "error: --confidence (vote.confidence) works with the consensus and weighted "
            "strategies only (the rubric strategy needs every candidate): use --strategy "
            "consensus, or drop --confidence",
        ),
        (
            ["vote", TASK, "-s", "consensus", "--early-stop"],
            "error: --early-stop (vote.early_stop) needs exact matching (similar clusters can "
            "merge as samples arrive): add --answer-pattern REGEX or --match exact",
        ),
        (
            consensus_args("--match", "exact", "--confidence", "1"),
            "error: --confidence: Input should be less than 1",
        ),
    ],
)
def test_early_stop_that_cannot_work_is_exit_2_naming_the_flag(
    llm: LLMServer, cli: CliRunner, args: list[str], message: str
) -> None:
    result = cli.invoke(app, [*args, "-q"])
    assert result.exit_code == 2 and result.stderr.strip() == message
    assert llm.count() == 0


def test_a_recipe_asks_for_it_too() -> None:
    with pytest.raises(ConfigError, match=r"^--early-stop \(vote.early_stop\) needs exact"):
        prepare_vote(TASK, recipe(n=3, strategy="weighted", early_stop=True), env_model=None)


def test_json_says_how_many_samples_were_drawn_and_saved(llm: LLMServer, cli: CliRunner) -> None:
    llm.script(None, "ANSWER: Paris")
    plain = cli.invoke(
        app, [*consensus_args("--answer-pattern", PATTERN), "--format", "json", "-q"]
    )
    doc = json.loads(plain.stdout)
    assert (doc["samples_drawn"], doc["samples_saved"], doc["sampling"]) == (15, 0, "all")
    stopped = cli.invoke(
        app,
        [
            *consensus_args("--match", "exact", "--early-stop"),
            "--format",
            "json",
            "-q",
            "--no-cache",
        ],
    )
    doc = json.loads(stopped.stdout)
    assert stopped.exit_code == 0 and len(doc["candidates"]) == 8 and doc["result"]
    assert (doc["samples_drawn"], doc["samples_saved"], doc["sampling"]) == (8, 7, "certain")
    judged = cli.invoke(app, ["vote", TASK, "-n", "2", "--format", "json", "-q"])
    assert json.loads(judged.stdout)["samples_saved"] == 0


def test_the_dry_run_says_fewer_calls_may_go_out(llm: LLMServer, cli: CliRunner) -> None:
    args = consensus_args("--answer-pattern", PATTERN, "--early-stop", "--dry-run")
    result = cli.invoke(app, args)
    assert result.exit_code == 0 and llm.count() == 0
    assert "early stop: the vote may draw fewer than the 15 candidates planned" in result.stderr
    assert "at most 15 calls" in result.stdout


def test_no_early_stop_overrides_a_recipe_that_stops_early(
    llm: LLMServer, cli: CliRunner, tmp_path: Any
) -> None:
    saved = tmp_path / "capital.yaml"
    saved.write_text(
        "name: capital\nmode: vote\nprompt: '{{ input }}'\n"
        f"vote: {{n: 15, strategy: consensus, answer_pattern: '{PATTERN}', confidence: 0.9}}\n"
    )
    llm.script(None, "ANSWER: Paris")
    stopped = cli.invoke(app, ["vote", TASK, "-r", str(saved), "-j", "4", "--no-cache"])
    assert stopped.exit_code == 0 and llm.count() == 4  # confidence alone turns early stop on
    assert "so the full run may pick differently" in stopped.stderr
    llm.clear()
    full = cli.invoke(app, ["vote", TASK, "-r", str(saved), "--no-early-stop", "--no-cache"])
    assert full.exit_code == 0 and llm.count() == 15
    assert "warning: confidence is ignored: early stop is off (--no-early-stop)" in full.stderr
