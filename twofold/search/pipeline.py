"""The query pipeline: retrievers -> fusion -> optional reranker, each with its depth.

Named pipelines are defined here, once, and used alike by ``twofold eval``,
``twofold search`` and the HTTP API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from twofold.core.errors import InputError
from twofold.core.registry import Registry
from twofold.core.types import Hit, Query, Ranking
from twofold.indexing.collection import Collection
from twofold.search.fusion import RRF
from twofold.search.retrievers import RETRIEVERS, Retriever


class Fuser(Protocol):
    def fuse(self, query_id: str, rankings: Mapping[str, Ranking], depth: int) -> Ranking: ...


@dataclass(frozen=True)
class PipelineSpec:
    """A named pipeline: which retrievers, whether to fuse, whether to rerank."""

    name: str
    retrievers: tuple[str, ...]
    description: str
    rerank: bool = False


PIPELINES: Registry[PipelineSpec] = Registry("pipeline")
for _spec in (
    PipelineSpec("bm25", ("bm25",), "BM25 on Lucene"),
    PipelineSpec("sparse", ("sparse",), "inference-free learned sparse (IDF query side)"),
    PipelineSpec("splade", ("splade",), "siamese SPLADE"),
    PipelineSpec("dense", ("dense",), "dense bi-encoder on FAISS"),
):
    PIPELINES.register(_spec.name, _spec)


@dataclass
class Pipeline:
    """``search(query, k)``: each retriever fetches ``depth`` hits, the fuser merges them
    (skipped for a single retriever), and the top ``k`` are returned."""

    name: str
    retrievers: dict[str, Retriever]
    fuser: Fuser = field(default_factory=RRF)
    depth: int = 100

    def search(self, query: Query, k: int = 10) -> Ranking:
        depth = max(self.depth, k)
        rankings = {name: r.retrieve(query, depth) for name, r in self.retrievers.items()}
        if len(rankings) == 1:
            ((name, ranking),) = rankings.items()
            return Ranking(
                query.query_id,
                tuple(
                    Hit(h.doc_id, h.score, {name: (i, h.score)})
                    for i, h in enumerate(ranking.hits[:k], start=1)
                ),
            )
        return self.fuser.fuse(query.query_id, rankings, depth).top(k)


def build_pipeline(collection: Collection, name: str, depth: int = 100) -> Pipeline:
    """The named pipeline over ``collection``; says which sub-index is missing if any."""
    spec = PIPELINES.get(name)
    missing = [r for r in spec.retrievers if not collection.has(r)]
    if missing:
        raise InputError(
            f"pipeline {name!r} needs {', '.join(missing)}, which collection {collection.name!r} "
            f"lacks (it has {', '.join(collection.retrievers)}); available pipelines: "
            f"{', '.join(available_pipelines(collection))}"
        )
    retrievers = {r: RETRIEVERS.get(r)(collection) for r in spec.retrievers}
    return Pipeline(name, retrievers, RRF(), depth)


def available_pipelines(collection: Collection) -> list[str]:
    return [
        n for n in PIPELINES.names() if all(collection.has(r) for r in PIPELINES.get(n).retrievers)
    ]
