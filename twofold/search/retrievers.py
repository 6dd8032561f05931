"""Retrievers: one verb, ``retrieve(query, k) -> Ranking``, over an opened collection.

``RETRIEVERS`` maps a sub-index name to a factory that wraps the opened index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twofold.core.registry import Registry
from twofold.core.types import Query, Ranking
from twofold.indexing.collection import Collection
from twofold.search.dense import DenseRetriever
from twofold.search.sparse import SparseRetriever, SpladeRetriever


class Retriever(Protocol):
    name: str

    def retrieve(self, query: Query, k: int) -> Ranking: ...


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
