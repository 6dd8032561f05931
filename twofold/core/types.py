"""The typed vocabulary of Twofold: documents, queries, hits, rankings, judgments."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SCORE_DIGITS = 12


def settle(score: float) -> float:
    """``score`` to ``SCORE_DIGITS`` significant digits: sums that are equal in exact
    arithmetic but differ in their last bits (``0.4`` and ``0.39999999999999997``, from
    adding the same terms in another order) become equal, so ties among computed scores
    (fusion, interpolation) are exact and broken by doc id, whatever the summation order."""
    return float(f"{score:.{SCORE_DIGITS}g}")


@dataclass(frozen=True, slots=True)
class Doc:
    """One corpus document. ``metadata`` holds any extra fields of the source line."""

    doc_id: str
    title: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def contents(self) -> str:
        """Title and text as one field (the BEIR-flat convention)."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Query:
    query_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A scored document. ``sources`` maps a retriever name to (rank, score) in its list."""

    doc_id: str
    score: float
    sources: Mapping[str, tuple[int, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ranking:
    """Hits in decreasing score order for one query."""

    query_id: str
    hits: tuple[Hit, ...]

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def doc_ids(self) -> list[str]:
        return [h.doc_id for h in self.hits]

    def top(self, k: int) -> Ranking:
        return Ranking(self.query_id, self.hits[:k])

    @staticmethod
    def from_scores(query_id: str, scores: Iterable[tuple[str, float]], k: int) -> Ranking:
        """Sort (doc_id, score) pairs by score desc, ties by doc_id, keep the top ``k``."""
        ordered = sorted(scores, key=lambda p: (-p[1], p[0]))[:k]
        return Ranking(query_id, tuple(Hit(d, float(s)) for d, s in ordered))


@dataclass(frozen=True, slots=True)
class SparseVec:
    """A sparse vector over a vocabulary: parallel arrays of term ids and weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.indices, self.values, strict=True))


# query_id -> doc_id -> graded relevance
Qrels = dict[str, dict[str, int]]
