"""JSON merge rules: arrays concatenated in order, objects deep-merged, dedupe, per-field rules."""

from __future__ import annotations

from parallelize.merge.jsonmerge import JsonMerger, dedupe
from parallelize.recipe.section import FieldRule


def rules(**spec: object) -> dict[str, FieldRule]:
    return {path.replace("__", "."): FieldRule.model_validate(v) for path, v in spec.items()}


def test_arrays_concatenate_in_order_and_objects_deep_merge() -> None:
    merger = JsonMerger()
    assert merger.merge([[1, 2], [3], []]) == [1, 2, 3]
    docs = [
        {"findings": [{"id": 1}], "meta": {"files": ["a"], "lang": "py"}},
        {"findings": [{"id": 2}], "meta": {"files": ["b"], "lang": "py", "extra": True}},
    ]
    assert merger.merge(docs) == {
        "findings": [{"id": 1}, {"id": 2}],
        "meta": {"files": ["a", "b"], "lang": "py", "extra": True},
    }
    assert merger.warnings() == []


def test_dedupe_by_key_keeps_the_first_occurrence_at_any_depth() -> None:
    merger = JsonMerger(dedupe_by="id")
    docs = [
        {"items": [{"id": 1, "v": "first"}, {"id": 2}], "nested": {"list": [{"id": 9}]}},
        {
            "items": [{"id": 1, "v": "second"}, {"id": 3}, {"no_id": True}],
            "nested": {"list": [{"id": 9}]},
        },
    ]
    merged = merger.merge(docs)
    assert merged["items"] == [{"id": 1, "v": "first"}, {"id": 2}, {"id": 3}, {"no_id": True}]
    assert merged["nested"]["list"] == [{"id": 9}]
    assert dedupe([1, 1, "1", [1], [1]], None) == [1, "1", [1]]


def test_field_rules_for_a_review_split_into_chunks() -> None:
    merger = JsonMerger(
        rules(
            verdict={"rule": "worst", "scale": ["approve", "comment", "request_changes"]},
            effort_hours="sum",
            tags="union",
            summary__lines="max",
            summary__first_seen="min",
            title="first",
            updated="last",
            passed="all",
            risky="any",
        )
    )
    docs = [
        {
            "verdict": "comment",
            "effort_hours": 1.5,
            "tags": ["io", "db"],
            "title": "A",
            "updated": "t1",
            "passed": True,
            "risky": False,
            "summary": {"lines": 10, "first_seen": "2024-02"},
        },
        {
            "verdict": "request_changes",
            "effort_hours": 2,
            "tags": ["db", "net"],
            "title": "B",
            "updated": "t2",
            "passed": False,
            "risky": False,
            "summary": {"lines": 30, "first_seen": "2024-01"},
        },
        {
            "verdict": "approve",
            "effort_hours": 0,
            "tags": ["io"],
            "title": "C",
            "updated": "t3",
            "passed": True,
            "risky": True,
            "summary": {"lines": 20, "first_seen": "2024-03"},
        },
    ]
    assert merger.merge(docs) == {
        "verdict": "request_changes",
        "effort_hours": 3.5,
        "tags": ["io", "db", "net"],
        "title": "A",
        "updated": "t3",
        "passed": False,
        "risky": True,
        "summary": {"lines": 30, "first_seen": "2024-01"},
    }
    assert merger.warnings() == []


def test_conflicts_keep_the_first_value_and_name_the_field() -> None:
    merger = JsonMerger(rules(n="sum", level={"rule": "worst", "scale": ["low", "high"]}))
    merged = merger.merge(
        [
            {"title": "A", "n": 1, "level": "low"},
            {"title": "B", "n": "two", "level": "critical"},
        ]
    )
    assert merged == {"title": "A", "n": 1, "level": "critical"}  # off-scale counts as worst
    text = "\n".join(merger.warnings())
    assert "'title': chunks disagree" in text
    assert "'n': rule 'sum' cannot combine" in text
    assert "'level': \"critical\" is not on the scale" in text


def test_missing_and_null_fields_take_the_other_value() -> None:
    merger = JsonMerger(rules(total="sum"))
    assert merger.merge([{"a": None, "total": 2}, {"a": 1}, {"total": None}]) == {
        "a": 1,
        "total": 2,
    }
    assert merger.merge([]) is None


def test_worst_counts_a_list_or_object_as_off_scale_instead_of_crashing() -> None:
    merger = JsonMerger(rules(level={"rule": "worst", "scale": ["low", "high"]}))
    merged = merger.merge([{"level": "high"}, {"level": ["high"]}, {"level": {"x": 1}}])
    assert merged == {"level": ["high"]}  # the first off-scale value is the worst so far
    text = "\n".join(merger.warnings())
    assert "'level': [\"high\"] is not on the scale; counted as worst" in text
