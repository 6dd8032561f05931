"""Retrievers: one verb, ``retrieve(query, k) -> Ranking``, over an opened collection.

``RETRIEVERS`` maps a sub-index name to a factory that wraps the opened index. A
retriever that can explain its scores (the sparse ones) is also an ``Explainer``: its
query encoding is a value the pipeline keeps (``SearchOutcome.encoded``), so the
explanations of every hit reuse the one encoding the search made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from twofold.core.registry import Registry
from twofold.core.types import Query, Ranking, SparseVec
from twofold.indexing.collection import Collection
from twofold.search.dense import DenseRetriever
from twofold.search.sparse import SparseRetriever, SpladeRetriever, TermContribution


class Retriever(Protocol):
    name: str

    def retrieve(self, query: Query, k: int) -> Ranking: ...


@runtime_checkable
class Explainer(Protocol):
    """A retriever in two steps, ``retrieve_encoded(query, encode_query(query), k)`` being
    ``retrieve(query, k)``, that explains a hit's score from the same query vector."""

    name: str

    def retrieve(self, query: Query, k: int) -> Ranking: ...

    def encode_query(self, query: Query) -> SparseVec: ...

    def retrieve_encoded(self, query: Query, vector: SparseVec, k: int) -> Ranking: ...

    def explain(self, vector: SparseVec, doc_id: str) -> list[TermContribution]: ...


class BM25Retriever:
    name = "bm25"

    def __init__(self, collection: Collection) -> None:
        self._index = collection.index("bm25")

    def retrieve(self, query: Query, k: int) -> Ranking:
        return Ranking.from_scores(query.query_id, self._index.search(query.text, k), k)


RetrieverFactory = Callable[[Collection], Retriever]
RETRIEVERS: Registry[RetrieverFactory] = Registry("retriever")
RETRIEVERS.register("bm25", BM25Retriever)
RETRIEVERS.register("dense", DenseRetriever)
RETRIEVERS.register("sparse", SparseRetriever)
RETRIEVERS.register("splade", SpladeRetriever)
