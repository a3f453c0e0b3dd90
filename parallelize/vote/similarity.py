"""Lexical similarity of candidate texts: normalisation, a cosine over words, clusters, medoids.

Similarity is the cosine of two bags of features, where the features are a text's case-folded
words and its pairs of adjacent words (so word order counts a little). Identical normalised
texts score 1.0, texts sharing no word 0.0. Candidates at or above the threshold are linked;
clusters are the connected groups of links. No model and no embedding is needed, so the result
is cheap, deterministic and explainable.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence

WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Trim, case-fold and collapse whitespace: the form answers are compared in."""
    return " ".join(text.split()).casefold()


def features(text: str) -> Counter[str]:
    """Words and adjacent word pairs of the normalised text, with their counts."""
    words = WORD.findall(normalise(text))
    bag: Counter[str] = Counter(words)
    bag.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return bag


def cosine(a: Counter[str], b: Counter[str]) -> float:
    """Cosine of two feature bags (1.0 for two empty texts, 0.0 when only one is empty)."""
    if not a or not b:
        return 1.0 if not a and not b else 0.0
    dot = sum(count * b[key] for key, count in a.items() if key in b)
    norm = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return min(1.0, dot / norm)


def similarity_matrix(texts: Sequence[str]) -> list[list[float]]:
    """Pairwise similarity of every text to every other (symmetric, 1.0 on the diagonal)."""
    bags = [features(t) for t in texts]
    size = len(bags)
    matrix = [[1.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1, size):
            matrix[i][j] = matrix[j][i] = round(cosine(bags[i], bags[j]), 6)
    return matrix


def clusters(matrix: Sequence[Sequence[float]], threshold: float) -> list[list[int]]:
    """Connected groups of positions linked by similarity >= threshold, each sorted, in order."""
    size = len(matrix)
    group = list(range(size))

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for i in range(size):
        for j in range(i + 1, size):
            if matrix[i][j] >= threshold:
                group[root(j)] = root(i)
    found: dict[int, list[int]] = {}
    for i in range(size):
        found.setdefault(root(i), []).append(i)
    return sorted(found.values(), key=lambda members: members[0])


def medoid(
    members: Sequence[int],
    matrix: Sequence[Sequence[float]],
    *,
    weights: Sequence[float] | None = None,
    among: Sequence[int] | None = None,
) -> int:
    """The member most similar to all of `among` (default: all), by weighted similarity sum.

    Ties go to the earliest member, so the choice is deterministic.
    """
    others = range(len(matrix)) if among is None else among
    weight = weights or [1.0] * len(matrix)

    def pull(i: int) -> float:
        return sum(weight[j] * matrix[i][j] for j in others if j != i)

    return max(sorted(members), key=lambda i: (round(pull(i), 9), -i))


def mean_similarity(i: int, matrix: Sequence[Sequence[float]], among: Sequence[int]) -> float:
    """Average similarity of position i to the other positions in `among` (1.0 when alone)."""
    others = [j for j in among if j != i]
    if not others:
        return 1.0
    return sum(matrix[i][j] for j in others) / len(others)
