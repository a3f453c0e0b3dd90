"""Chunking: exact counts, balance, order, and every input byte in exactly one chunk."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parallelize.errors import InputError
from parallelize.inputs.read import Document
from parallelize.inputs.tokens import ESTIMATE, get_counter
from parallelize.plan.chunking import (
    Chunk,
    Costs,
    chunk_budget,
    chunk_count,
    chunk_files,
    split_document,
)
from parallelize.plan.sections import plan_chunks
from parallelize.plan.tasks import section_tasks
from parallelize.recipe.load import parse_recipe

count = ESTIMATE.count


def doc(path: str, text: str) -> Document:
    return Document(path, text, count(text))


def lines(n: int, width: int = 40, tag: str = "") -> str:
    return "".join(f"{tag}line {i:05d} " + "x" * width + "\n" for i in range(n))


def rebuilt(chunks: list[Chunk]) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in chunks:
        for part in chunk.parts:
            out[part.path] = out.get(part.path, "") + part.text
    return out


def test_exactly_n_balanced_contiguous_chunks() -> None:
    docs = [doc(f"f{i:02d}.py", lines(20 + 7 * (i % 5))) for i in range(30)]
    plan = chunk_count(docs, 4, ESTIMATE)
    assert len(plan.chunks) == 4 and plan.warning is None
    order = [p.path for c in plan.chunks for p in c.parts]
    assert order == [d.path for d in docs]  # contiguous, stable, each file whole
    sizes = [c.tokens for c in plan.chunks]
    assert max(sizes) <= 1.25 * (sum(sizes) / 4)


def test_fewer_files_than_chunks_splits_the_largest_at_line_boundaries() -> None:
    docs = [doc("big.py", lines(400)), doc("small.py", lines(10))]
    plan = chunk_count(docs, 4, ESTIMATE)
    assert len(plan.chunks) == 4
    assert rebuilt(plan.chunks) == {d.path: d.text for d in docs}
    big = [p for c in plan.chunks for p in c.parts if p.path == "big.py"]
    assert all(p.text.endswith("\n") for p in big)
    assert [p.piece for p in big] == list(range(1, len(big) + 1))
    assert {p.pieces for p in big} == {len(big)}
    assert 'part="1/' in plan.chunks[0].text and 'lines="1-' in plan.chunks[0].text


def test_too_few_lines_gives_fewer_chunks_with_a_warning() -> None:
    plan = chunk_count([doc("a.txt", "one\ntwo\n")], 5, ESTIMATE)
    assert len(plan.chunks) == 2
    assert "too few lines for 5 chunks" in (plan.warning or "")


def test_budget_packs_files_and_splits_the_oversized() -> None:
    docs = [doc("a.py", lines(10)), doc("b.py", lines(10)), doc("huge.py", lines(300))]
    plan = chunk_budget(docs, 400, ESTIMATE)
    assert all(c.tokens <= 400 for c in plan.chunks)
    assert plan.chunks[0].paths == ["a.py", "b.py"]
    assert rebuilt(plan.chunks) == {d.path: d.text for d in docs}


def test_one_chunk_per_file() -> None:
    docs = [doc("a.py", lines(3)), doc("b.py", lines(3))]
    plan = chunk_files(docs, 10_000, ESTIMATE)
    assert [c.paths for c in plan.chunks] == [["a.py"], ["b.py"]]


def test_chunk_ids_are_stable_and_content_derived() -> None:
    docs = [doc("a.py", lines(50)), doc("b.py", lines(50))]
    first = chunk_count(docs, 2, ESTIMATE).chunks
    again = chunk_count(docs, 2, ESTIMATE).chunks
    assert [c.id for c in first] == [c.id for c in again]
    edited = [docs[0], doc("b.py", lines(50, tag="!"))]
    changed = chunk_count(edited, 2, ESTIMATE).chunks
    assert first[0].id == changed[0].id and first[1].id != changed[1].id


texts = st.lists(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(texts=texts, n=st.integers(1, 6))
def test_property_nothing_lost_or_duplicated(texts: list[str], n: int) -> None:
    docs = [doc(f"d{i}.txt", t) for i, t in enumerate(texts)]
    plan = chunk_count(docs, n, ESTIMATE)
    assert rebuilt(plan.chunks) == {d.path: d.text for d in docs}
    assert 1 <= len(plan.chunks) <= n
    assert chunk_count(docs, n, ESTIMATE) == plan  # deterministic


# --- budgets, natural boundaries, overlap, stability (with the counter in use) ---

COUNTER = get_counter("gpt-4o")  # tiktoken when its encoding is cached, else the estimate


def cdoc(path: str, text: str) -> Document:
    return Document(path, text, COUNTER.count(text))


def unframed(chunks: list[Chunk]) -> dict[str, str]:
    """Each file's text put back together, lines repeated by --overlap dropped."""
    out: dict[str, str] = {}
    for chunk in chunks:
        for part in chunk.parts:
            text = part.text
            if part.overlap:  # lines end at "\n" only (a lone "\r" is no line break here)
                text = "\n".join(text.split("\n")[part.overlap :])
            out[part.path] = out.get(part.path, "") + text
    return out


line_text = st.text(alphabet="ab xy_(){}:=.#\t", max_size=30)
source = st.lists(
    st.tuples(st.sampled_from(["", "    ", "\t"]), line_text), min_size=0, max_size=60
).map(lambda rows: "".join(f"{indent}{body}\n" for indent, body in rows))


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(source, min_size=1, max_size=6),
    budget=st.integers(60, 400),
    overlap=st.integers(0, 3),
    mode=st.sampled_from(["budget", "files", "count"]),
)
def test_property_chunks_fit_lose_nothing_and_repeat(texts, budget, overlap, mode) -> None:
    docs = [cdoc(f"pkg/m{i}.py", t) for i, t in enumerate(texts)]
    costs = Costs(COUNTER)

    def plan():
        if mode == "count":
            return chunk_count(docs, 3, COUNTER, costs=costs, overlap=overlap, hard_budget=budget)
        cut = chunk_budget if mode == "budget" else chunk_files
        return cut(docs, budget, COUNTER, costs=costs, overlap=overlap)

    chunks = plan().chunks
    assert unframed(chunks) == {d.path: d.text for d in docs}
    assert plan().chunks == chunks  # deterministic
    for chunk in chunks:
        assert chunk.cost == sum(costs.of(p) for p in chunk.parts)
        if mode != "count":
            assert chunk.cost <= budget
        for part in chunk.parts:
            exact = COUNTER.count(part.text)
            assert part.tokens == exact if COUNTER.exact else part.tokens >= exact


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(source, min_size=1, max_size=5), limit=st.integers(120, 600))
def test_property_every_rendered_request_stays_within_chunk_tokens(texts, limit) -> None:
    recipe = parse_recipe(
        "system: You review code.\nprompt: 'Review {{ paths }} ({{ chunk_id }}):\n\n"
        f"{{{{ input }}}}\n\nList bugs.'\nchunking:\n  chunk_tokens: {limit}\n  overlap: 1\n"
    )
    docs = [cdoc(f"src/file_{i}.py", t) for i, t in enumerate(texts)]
    plan = plan_chunks(docs, recipe, counter=COUNTER, model="gpt-4o", window=100_000)
    for task in section_tasks(recipe, plan.chunks, model="gpt-4o"):
        assert COUNTER.request_tokens(task.request.messages) <= limit


def python_module(functions: int) -> str:
    body = "    total = 0\n    for i in range(x):\n        total += i * {n}\n    return total\n"
    return "".join(f"def f{n}(x):\n{body.format(n=n)}\n\n" for n in range(functions))


def pieces(text: str, budget: int, **kw) -> list:
    return split_document(cdoc("m.py", text), budget, COUNTER, **kw)


def test_code_is_split_between_top_level_definitions() -> None:
    text = "import os\n\n\n" + python_module(120)
    parts = pieces(text, 300)
    assert len(parts) > 3 and "".join(p.text for p in parts) == text
    for part in parts[1:]:
        assert part.text.startswith("def f") and text[: part.start].endswith("\n\n")
    assert [p.first_line for p in parts] == sorted(p.first_line for p in parts)
    assert parts[1].first_line == text[: parts[1].start].count("\n") + 1


def test_indented_code_is_split_after_blank_lines_then_at_line_ends() -> None:
    methods = "".join(
        f"    def m{n}(self):\n        a = {n}\n        return a\n\n" for n in range(80)
    )
    parts = pieces("class Big:\n" + methods, 200)
    assert len(parts) > 3
    assert all(p.text.startswith("    def m") for p in parts[1:])  # after a blank line
    dense = "".join(f"        value_{n} = compute({n})\n" for n in range(200))
    parts = pieces(dense, 150)
    assert len(parts) > 3 and all(p.text.endswith("\n") for p in parts)
    assert "".join(p.text for p in parts) == dense


def test_a_line_longer_than_the_budget_is_cut_mid_line_before_a_space() -> None:
    text = " ".join(f"word{n}" for n in range(3000)) + "\n"
    parts = pieces(text, 200)
    assert "".join(p.text for p in parts) == text and len(parts) > 5
    assert all(p.text.startswith(" ") for p in parts[1:])
    costs = Costs(COUNTER)
    assert all(p.tokens + costs.frame("m.py", split=True) <= 200 for p in parts)


def test_a_ten_megabyte_single_line_file_is_cut_within_the_budget() -> None:
    text = "lorem ipsum dolor sit amet " * 370_000  # 10 MB, no newline at all
    docs = [Document("big.txt", text, ESTIMATE.count(text))]
    plan = chunk_budget(docs, 500_000, ESTIMATE)
    assert len(plan.chunks) > 4 and all(c.cost <= 500_000 for c in plan.chunks)
    assert unframed(plan.chunks) == {"big.txt": text}


def test_overlap_repeats_the_last_lines_of_the_previous_piece() -> None:
    text = python_module(60)
    parts = pieces(text, 250, overlap=2)
    assert len(parts) > 2
    for before, part in itertools.pairwise(parts):
        assert part.overlap == 2
        assert part.text.split("\n")[:2] == before.text.split("\n")[-3:-1]
        assert 'lines="' in part.framed() and part.first_line == before.last_line - 1


def sized_tree(n: int, *, grow: int = -1) -> list[Document]:
    docs = []
    for i in range(n):
        functions = 3 + (i * 7) % 11 + (8 if i == grow else 0)
        docs.append(cdoc(f"src/mod_{i:03d}.py", python_module(functions)))
    return docs


def greedy(docs: list[Document], budget: int) -> list[tuple[str, ...]]:
    """Plain first-fit packing, for comparison: every cut after an edit moves."""
    groups: list[list[str]] = [[]]
    used = 0
    for d in docs:
        if groups[-1] and used + d.tokens > budget:
            groups.append([])
            used = 0
        groups[-1].append(d.path + str(d.tokens))
        used += d.tokens
    return [tuple(g) for g in groups]


def test_one_edited_file_changes_few_chunks() -> None:
    before, after = sized_tree(150), sized_tree(150, grow=40)
    budget = 6 * before[0].tokens
    old = chunk_budget(before, budget, COUNTER).chunks
    new = chunk_budget(after, budget, COUNTER).chunks
    changed = len({c.id for c in new} - {c.id for c in old})
    assert 1 <= changed <= 2
    assert len(set(greedy(after, budget)) - set(greedy(before, budget))) > changed
    by_file = [chunk_files(d, budget, COUNTER).chunks for d in (before, after)]
    assert len({c.id for c in by_file[1]} - {c.id for c in by_file[0]}) == 1
    counted = [chunk_count(d, 8, COUNTER).chunks for d in (before, after)]
    assert len({c.id for c in counted[1]} - {c.id for c in counted[0]}) <= 2


def test_a_chunk_that_cannot_fit_the_context_window_names_its_files() -> None:
    recipe = parse_recipe("prompt: '{{ input }}'\nchunking:\n  chunks: 1\n")
    docs = [cdoc("src/huge.py", python_module(400)), cdoc("src/small.py", "x = 1\n")]
    with pytest.raises(InputError, match=r"chunk 1/1 \(src/huge\.py, src/small\.py\) needs about"):
        plan_chunks(docs, recipe, counter=COUNTER, model="m", window=2_000)
