"""Dense retriever: encode the query with the index's own encoder, search FAISS by inner
product, map doc-store ordinals back to doc ids.

Vector-level access for other searchers (kNN-Embed) goes through the opened index,
``collection.index("dense")`` (a ``twofold.indexing.dense.index.DenseIndex``):
``encode_queries``, ``search_vectors`` and ``vectors``; ``DenseRetriever`` wraps them
with doc ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from twofold.core.types import Hit, Query, Ranking
from twofold.indexing.collection import Collection
from twofold.indexing.dense.adapter import Adapter, read_adapter
from twofold.indexing.dense.index import DenseIndex, VectorHits


class DenseRetriever:
    """``retrieve(query, k)`` over a collection's ``dense`` sub-index."""

    name = "dense"

    def __init__(self, collection: Collection, use_adapter: bool = True) -> None:
        self.index: DenseIndex = collection.index("dense")
        self.ids: list[str] = collection.docs.ids
        self.adapter: Adapter | None = None
        if use_adapter:
            sha = self.index.entry.get("encoder", {}).get("sha256")
            self.adapter = read_adapter(collection.root, self.index.dim, self.index.count, sha)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors (len(texts), dim), float32, unit norm; mapped by the collection's
        query adapter when it has one (``twofold train adapter``)."""
        vectors = self.index.encode_queries(texts)
        return vectors if self.adapter is None else self.adapter.queries(vectors)

    def search_vectors(
        self, vectors: np.ndarray, k: int, within: np.ndarray | None = None
    ) -> VectorHits:
        """Top-``k`` ordinals per query vector; see ``DenseIndex.search_vectors`` (a
        two-sided adapter searches its transformed document vectors exactly instead)."""
        if self.adapter is not None and self.adapter.docs is not None:
            return VectorHits(*self.adapter.search(vectors, k, within))
        return self.index.search_vectors(vectors, k, within)

    def rankings(self, query_ids: list[str], hits: VectorHits) -> list[Ranking]:
        """One ``Ranking`` per row of ``hits`` (padding ``-1`` dropped), doc ids attached."""
        out = []
        for query_id, scores, ordinals in zip(query_ids, hits.scores, hits.ordinals, strict=True):
            out.append(
                Ranking(
                    query_id,
                    tuple(
                        Hit(self.ids[o], float(s))
                        for s, o in zip(scores.tolist(), ordinals.tolist(), strict=True)
                        if o >= 0
                    ),
                )
            )
        return out

    def retrieve(self, query: Query, k: int) -> Ranking:
        if not query.text.strip():
            return Ranking(query.query_id, ())
        hits = self.search_vectors(self.encode([query.text]), k)
        return self.rankings([query.query_id], hits)[0]

    def retrieve_batch(self, queries: list[Query], k: int) -> list[Ranking]:
        """Many queries in one encoder pass and one FAISS call."""
        if not queries:
            return []
        hits = self.search_vectors(self.encode([q.text for q in queries]), k)
        return self.rankings([q.query_id for q in queries], hits)
