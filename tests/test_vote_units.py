"""The vote's pure parts: JSON replies, similarity, labels and orders, verdicts, checks, flags."""

from __future__ import annotations

import re

import pytest

from parallelize.cli.vote_flags import parse_check, parse_criterion, parse_weight
from parallelize.errors import ConfigError, RecipeError
from parallelize.plan.jsonreply import JSONReplyError, parse_json_object
from parallelize.recipe.load import parse_recipe
from parallelize.recipe.vote import Criterion
from parallelize.vote.consensus import extract_answer
from parallelize.vote.judge import judge_orders, make_labels, read_verdict
from parallelize.vote.rubric import check_failure, read_scores
from parallelize.vote.similarity import clusters, medoid, normalise, similarity_matrix
from parallelize.vote.verdict import VerdictError


@pytest.mark.parametrize(
    "reply",
    [
        '{"winner": "B", "reason": "clearer"}',
        'Sure! Here is my verdict:\n```json\n{"winner": "B", "reason": "clearer"}\n```\nThanks.',
        'I pick {B} because... final: {"winner": "B", "reason": "clearer"} done',
        '<think>maybe {"winner": "A"}</think>\n{"winner": "B", "reason": "clearer"}',
        '```\n{"winner": "B",\n "reason": "clearer"}\n```',
    ],
)
def test_json_is_found_in_fences_prose_and_after_thinking(reply: str) -> None:
    assert parse_json_object(reply) == {"winner": "B", "reason": "clearer"}


@pytest.mark.parametrize("reply", ["", "B is best", "[1, 2]", '{"winner": "B"'])
def test_replies_without_a_json_object_are_errors(reply: str) -> None:
    with pytest.raises(JSONReplyError):
        parse_json_object(reply)


def test_normalise_and_similarity() -> None:
    assert normalise("  The  Answer\n IS 42 ") == "the answer is 42"
    matrix = similarity_matrix(
        ["Paris is the capital of France.", "paris is the capital of  france", "Berlin, Germany"]
    )
    assert matrix[0][1] == 1.0  # punctuation and case do not matter, word order does a little
    assert matrix[0][2] == 0.0
    assert clusters(matrix, 0.8) == [[0, 1], [2]]
    assert medoid([0, 1, 2], matrix) == 0  # ties go to the earliest


def test_medoid_is_the_most_typical_and_weights_pull() -> None:
    texts = ["red green blue", "red green", "green blue", "yellow"]
    matrix = similarity_matrix(texts)
    assert medoid(range(4), matrix) == 0
    assert medoid(range(4), matrix, weights=[1, 1, 1, 50]) in (0, 1, 2)  # yellow shares nothing


def test_labels_and_orders() -> None:
    assert make_labels(3) == ["A", "B", "C"]
    assert make_labels(28)[-2:] == ["AA", "AB"]
    orders = judge_orders([0, 1, 2, 3], 4, seed=7)
    assert orders == judge_orders([0, 1, 2, 3], 4, seed=7)  # reproducible from the seed
    assert len({tuple(o) for o in orders}) == 4  # K <= N rounds: all orders differ
    for position in range(4):  # K = N: every candidate takes every position once
        assert sorted(o[position] for o in orders) == [0, 1, 2, 3]
    assert judge_orders([0, 1, 2, 3], 1, seed=8) != judge_orders([0, 1, 2, 3], 1, seed=7)
    more = judge_orders([0, 1, 2], 6, seed=7)  # past N rounds: new orders while any remain
    assert len({tuple(o) for o in more}) == 6 and more[:3] == judge_orders([0, 1, 2], 3, seed=7)
    assert len(judge_orders([0, 1], 3, seed=7)) == 3  # only 2 orders exist: one repeats


@pytest.mark.parametrize(
    ("obj", "label"),
    [
        ({"winner": "B", "reason": "r"}, "B"),
        ({"Winner": "candidate b."}, "B"),
        ({"winner": "[C]"}, "C"),
        ({"winner": "**A**"}, "A"),
    ],
)
def test_verdict_labels_are_read_leniently(obj: dict, label: str) -> None:
    assert read_verdict(obj, ["A", "B", "C"])[0] == label


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ({"best": "A"}, 'no "winner" key'),
        ({"winner": "D"}, "not one of the labels A, B, C"),
        ({"winner": ["A"]}, "not one of the labels"),
        ({"winner": 2}, "not one of the labels"),
    ],
)
def test_unusable_verdicts_say_why(obj: dict, problem: str) -> None:
    with pytest.raises(VerdictError, match=re.escape(problem)):
        read_verdict(obj, ["A", "B", "C"])


def test_scores_are_validated() -> None:
    assert read_scores({"scores": {"1": 8, "2": "6.5"}, "reason": " ok "}, 2) == ([8.0, 6.5], "ok")
    assert read_scores({"scores": [3, 4]}, 2)[0] == [3.0, 4.0]
    for obj, problem in [
        ({"scores": {"1": 8}}, "no score for criterion 2"),
        ({"scores": {"1": 8, "2": 11}}, "outside 1-10"),
        ({"scores": {"1": True, "2": 5}}, "not a number"),
        ({"scores": [1]}, "1 values for 2 criteria"),
        ({"score": 5}, 'no "scores" object'),
    ]:
        with pytest.raises(VerdictError, match=re.escape(problem)):
            read_scores(obj, 2)


@pytest.mark.parametrize(
    ("check", "text", "failure"),
    [
        ({"max_chars": 5}, "  short  ", None),
        ({"max_chars": 5}, "too long", "8 chars > max_chars 5"),
        ({"min_chars": 3}, "ab", "2 chars < min_chars 3"),
        ({"regex": r"^\d+$"}, "12", None),
        ({"regex": r"^\d+$"}, "12a", "no match for regex"),
        ({"must_include": ["acme", "Q3"]}, "ACME beats q3", None),
        ({"must_include": "acme"}, "nothing", "missing 'acme'"),
        ({"must_not_include": ["!"]}, "Wow!", "contains '!'"),
        ({"valid_json": True}, '```json\n{"a": 1}\n```', None),
        ({"valid_json": True}, "{a: 1}", "not valid JSON"),
    ],
)
def test_deterministic_checks(check: dict, text: str, failure: str | None) -> None:
    found = check_failure(text, Criterion.model_validate(check))
    assert found == failure if failure is None else failure in (found or "")


def test_answer_extraction_takes_the_last_match() -> None:
    pattern = re.compile(r"ANSWER:\s*(\S+)")
    assert extract_answer("ANSWER: 1 ... no wait ANSWER: 2", pattern) == "2"
    assert extract_answer("no answer", pattern) is None
    assert extract_answer("  whole text \n", None) == "whole text"
    named = re.compile(r"(?:final|answer)=(?P<answer>\w+)")
    assert extract_answer("final=yes", named) == "yes"


def test_flag_parsers() -> None:
    assert parse_weight("llama3.1:8b=2.5") == ("llama3.1:8b", 2.5)
    assert parse_weight("a=b=1") == ("a=b", 1.0)
    for bad in ["gpt", "gpt=0", "gpt=-1", "gpt=x", "=2", "gpt=inf"]:
        with pytest.raises(ConfigError, match="NAME=W"):
            parse_weight(bad)
    assert parse_criterion("Accurate: no invented facts::3") == Criterion(
        text="Accurate: no invented facts", weight=3
    )
    assert parse_criterion("Concise") == Criterion(text="Concise")
    assert parse_criterion("Prefers std::vector") == Criterion(text="Prefers std::vector")
    with pytest.raises(ConfigError, match="TEXT::WEIGHT"):
        parse_criterion("Concise::-1")
    assert parse_check("max_chars=80").max_chars == 80
    assert parse_check("must_include=a=b").must_include == ["a=b"]
    assert parse_check("valid_json").valid_json is True
    with pytest.raises(ConfigError, match="unknown check 'max_char'"):
        parse_check("max_char=3")
    with pytest.raises(ConfigError, match="invalid regular expression"):
        parse_check("regex=(")


def test_vote_block_validation_names_file_line_and_key() -> None:
    recipe = parse_recipe(
        "mode: vote\nmodels:\n  - a\n  - {name: b, weight: 2}\nvote:\n  criteria:\n"
        "    - Accurate\n    - {max_chars: 80}\n",
        source="r.yaml",
    )
    assert [m.weight for m in recipe.models or ()] == [1.0, 2.0]
    assert [c.check for c in recipe.vote.criteria] == [None, "max_chars"]
    cases = [
        ("vote:\n  quorum: 1.5\n", "r.yaml:2: vote.quorum"),
        ("vote:\n  quorum: 0\n", "r.yaml:2: vote.quorum"),
        ("vote:\n  n: 0\n", "r.yaml:2: vote.n"),
        ("vote:\n  strategy: majority\n", "r.yaml:2: vote.strategy"),
        ("vote:\n  criteria:\n    - {max_chars: 3, text: x}\n", "give exactly one of text"),
        ("vote:\n  output: answer\n", "output: answer needs an answer_pattern"),
        ("models:\n  - {name: a, weight: 0}\n", "r.yaml:2: models.0.weight"),
        ("models: [a, a]\n", "r.yaml:1: models: model names must be unique (repeated: a)"),
        ("vote:\n  judge_rounds: 99\n", "vote.judge_rounds"),
        ("vote:\n  critera: []\n", "unknown key 'vote.critera'; did you mean 'criteria'?"),
    ]
    for text, message in cases:
        with pytest.raises(RecipeError, match=re.escape(message)):
            parse_recipe(text, source="r.yaml")
