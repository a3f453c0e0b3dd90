"""Chunking: exact counts, balance, order, and every input byte in exactly one chunk."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parallelize.chunking import Chunk, chunk_budget, chunk_count, chunk_files
from parallelize.inputs import Document
from parallelize.tokens import ESTIMATE

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
