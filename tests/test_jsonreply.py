"""Reading the JSON document out of a model's reply: bare, fenced, or wrapped in prose."""

from __future__ import annotations

import pytest

from parallelize.plan.jsonreply import JSONReplyError, parse_json_reply


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ('Here you go:\n```json\n{"a": [1]}\n```\nAnything else?', {"a": [1]}),
        ('```\n{"a": 2}\n```', {"a": 2}),
        (
            'Sure! The verdict is {"flagged": false, "reason": "ok"} as requested.',
            {
                "flagged": False,
                "reason": "ok",
            },
        ),
        ('Note {not json} but then {"b": true}', {"b": True}),
    ],
)
def test_parses_documents_in_common_wrappings(reply: str, expected: object) -> None:
    assert parse_json_reply(reply) == expected


@pytest.mark.parametrize("reply", ["", "   ", "I think it is fine.", '{"a": 1', "```json\n{]\n```"])
def test_replies_without_a_document_say_why(reply: str) -> None:
    with pytest.raises(JSONReplyError, match=r"empty|not valid JSON: .* at line \d+ column \d+"):
        parse_json_reply(reply)


def test_a_json_error_names_its_place_once() -> None:
    with pytest.raises(JSONReplyError) as err:
        parse_json_reply('{"a": "abc')
    assert "starting at at" not in str(err.value) and "at line 1 column 7" in str(err.value)
