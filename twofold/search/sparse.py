"""Learned-sparse search: ``SparseSearcher`` (query encoder + engine), retrievers, explain.

A ``SparseSearcher`` turns text into a sparse query vector with the index's own query
encoder (idf table for ``sparse``, the MLM for ``splade``) and asks one engine
(``native`` exact float, ``seismic`` pruned with exact scores, or ``lucene`` quantized
impacts) for the top ``k``. An
explanation lists, for one hit, each query term with its query weight, document weight
and contribution ``q_j * w_d[j]`` (in the engine's arithmetic: for Lucene the quantized
integers divided by ``scale**2``); the contributions sum to the hit's score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from twofold.core.types import Query, Ranking, SparseVec
from twofold.indexing.collection import Collection
from twofold.indexing.sparse.index import SparseIndex, quantize

SPARSE_RETRIEVERS = ("sparse", "splade")


@dataclass(frozen=True)
class TermContribution:
    """One query term's share of a hit's score."""

    term: str
    term_id: int
    query_weight: float
    doc_weight: float
    contribution: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class SparseSearcher:
    """Search one opened sparse index with one engine (default: the index's)."""

    def __init__(
        self, index: SparseIndex, engine: str | None = None, query_min_idf: float | None = None
    ) -> None:
        self.index = index
        self.engine = index.engine(engine)
        self.encoder = index.query_encoder(query_min_idf)

    def encode(self, text: str) -> SparseVec:
        """The query vector of ``text`` (term ids ascending, float weights)."""
        ids, weights = self.encoder.encode_query(text)
        return SparseVec(tuple(ids.tolist()), tuple(float(w) for w in weights.tolist()))

    def search_vector(self, query: SparseVec, k: int) -> list[tuple[str, float]]:
        ids = np.asarray(query.indices, dtype=np.int64)
        weights = np.asarray(query.values, dtype=np.float32)
        return self.engine.search(ids, weights, k)

    def search(self, text: str, k: int) -> list[tuple[str, float]]:
        if not text.strip():
            return []
        ids, weights = self.encoder.encode_query(text)
        return self.engine.search(ids, weights, k)

    def explain(self, text: str, doc_id: str) -> list[TermContribution]:
        """Matched query terms of ``doc_id``, largest contribution first."""
        return self.explain_vector(self.encode(text), doc_id)

    def explain_vector(self, query: SparseVec, doc_id: str) -> list[TermContribution]:
        """``explain`` for an encoded query (encode once, explain many hits). The document
        weights come from the CSR forward index, whichever engine found the hit."""
        ids = np.asarray(query.indices, dtype=np.int64)
        q = np.asarray(query.values, dtype=np.float64)
        d = self.index.doc_weights(self.index.ordinal(doc_id), ids).astype(np.float64)
        if self.engine.name == "lucene":
            s = self.index.scale
            q = quantize(q, s).astype(np.float64) / s
            d = quantize(d, s).astype(np.float64) / s
        out = [
            TermContribution(self.index.vocab[j], int(j), float(qw), float(dw), float(qw * dw))
            for j, qw, dw in zip(ids.tolist(), q.tolist(), d.tolist(), strict=True)
            if qw > 0 and dw > 0
        ]
        return sorted(out, key=lambda c: (-c.contribution, c.term_id))


def use_sparse_engine(collection: Collection, engine: str | None) -> None:
    """Make ``engine`` (``native`` | ``lucene`` | ``seismic``) the engine of every sparse
    sub-index the collection has, for the retrievers opened after this; ``None`` keeps the
    manifest's."""
    if engine is None:
        return
    for name in SPARSE_RETRIEVERS:
        if collection.has(name):
            collection.index(name).use_engine(engine)


class SparseRetriever:
    """``retrieve(query, k)`` over the ``sparse`` (inference-free) sub-index.

    It is also an ``Explainer`` (``twofold.search.retrievers``): ``encode_query`` makes
    the query vector once, ``retrieve_encoded`` searches with it, and ``explain`` says
    which of its terms made a hit's score, so a request that explains every hit encodes
    its query once."""

    name = "sparse"

    def __init__(self, collection: Collection, engine: str | None = None) -> None:
        self.searcher = SparseSearcher(collection.index(self.name), engine)

    def retrieve(self, query: Query, k: int) -> Ranking:
        return Ranking.from_scores(query.query_id, self.searcher.search(query.text, k), k)

    def encode_query(self, query: Query) -> SparseVec:
        """The query vector (empty for a blank query: no model runs)."""
        return self.searcher.encode(query.text) if query.text.strip() else SparseVec((), ())

    def retrieve_encoded(self, query: Query, vector: SparseVec, k: int) -> Ranking:
        """``retrieve`` with the vector ``encode_query`` made (the same hits)."""
        hits = self.searcher.search_vector(vector, k) if vector.indices else []
        return Ranking.from_scores(query.query_id, hits, k)

    def explain(self, vector: SparseVec, doc_id: str) -> list[TermContribution]:
        """The matched terms of ``vector`` in ``doc_id``, largest contribution first."""
        return self.searcher.explain_vector(vector, doc_id)


class SpladeRetriever(SparseRetriever):
    """``retrieve(query, k)`` over the ``splade`` (siamese) sub-index."""

    name = "splade"


def explain_ranking(
    collection: Collection,
    text: str,
    ranking: Ranking,
    retrievers: Sequence[str] = SPARSE_RETRIEVERS,
    engine: str | None = None,
) -> dict[str, dict[str, list[TermContribution]]]:
    """doc_id -> sparse retriever name -> term contributions, for each hit of ``ranking``
    and each sparse sub-index the collection has."""
    searchers = {
        name: SparseSearcher(collection.index(name), engine)
        for name in retrievers
        if collection.has(name)
    }
    vectors = {name: s.encode(text) for name, s in searchers.items()}  # once per request
    return {
        hit.doc_id: {
            name: s.explain_vector(vectors[name], hit.doc_id) for name, s in searchers.items()
        }
        for hit in ranking.hits
    }


def format_explanation(contributions: Sequence[TermContribution], top: int = 8) -> str:
    """``term q x d = c`` for the largest contributions, one line."""
    parts = [
        f"{c.term} {c.query_weight:.2f}x{c.doc_weight:.2f}={c.contribution:.3f}"
        for c in contributions[:top]
    ]
    more = len(contributions) - top
    return ", ".join(parts) + (f", ... {more} more" if more > 0 else "") if parts else "(none)"
