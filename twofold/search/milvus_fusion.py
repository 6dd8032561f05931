"""Fusion inside Milvus: one ``hybrid_search`` over a Milvus-backed collection's learned
retrievers, an option beside Twofold's own fusion (which stays the default).

Each query is encoded here, exactly as the retrievers encode it (idf weights for
``sparse``, the SPLADE MLM for ``splade``, MiniLM and the collection's query adapter for
``dense``). Milvus then runs one request per vector field and fuses the lists itself:

* ``rrf``: ``RRFRanker(k)``, ``sum_r 1 / (k + rank_r(d))``, the formula of Twofold's
  unweighted RRF (``fusion.rrf``), so the two agree on the same lists;
* ``weighted``: ``WeightedRanker`` with one vote per model family
  (``pipeline.family_fusion``) over scores that Milvus normalizes itself (arctan for
  inner product), not Twofold's min-max: a different fusion, not a faster copy.

BM25 is not in it: it stays on Lucene, outside Milvus, so these pipelines fuse
``sparse``, ``splade`` and ``dense`` only. The pipelines ``milvus-rrf`` and
``milvus-weighted`` use it. They are offered only where they can answer
(:func:`fusion_problem`): two or more sub-indexes in one Milvus collection, and no
two-sided dense adapter (it maps the stored document vectors, which Milvus holds
unmapped). The sparse query vectors are kept for explanations, as on any pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

from twofold.core.errors import CollectionError, InputError
from twofold.core.types import Hit, Query, Ranking, SparseVec
from twofold.indexing.collection import Collection
from twofold.indexing.dense.adapter import FOLDER as ADAPTER_FOLDER
from twofold.indexing.milvus_index import SPARSE_SEARCH, sparse_query
from twofold.search.fusion import RRF_K

FUSED_IN_MILVUS = ("sparse", "splade", "dense")  # what Milvus holds; bm25 is on Lucene
Method = Literal["rrf", "weighted"]


def milvus_retrievers(collection: Collection) -> list[str]:
    """The collection's sub-indexes that Milvus holds (``backend: milvus``)."""
    subs = collection.manifest.sub_indexes
    return [
        name
        for name in FUSED_IN_MILVUS
        if name in subs and dict(subs[name]).get("backend", "local") == "milvus"
    ]


def fusion_problem(collection: Collection) -> str | None:
    """Why Milvus cannot fuse this collection's retrievers, or None when it can."""
    names = milvus_retrievers(collection)
    if len(names) < 2:
        return (
            f"collection {collection.name!r} has {len(names)} sub-index in Milvus; build with "
            "--backend milvus and two or more of --retrievers sparse,splade,dense"
        )
    subs = collection.manifest.sub_indexes
    targets = {str(dict(subs[n]).get("milvus", {}).get("collection")) for n in names}
    if len(targets) != 1:
        return f"its sub-indexes are in several Milvus collections ({', '.join(sorted(targets))})"
    meta = collection.root / ADAPTER_FOLDER / "adapter.json"
    if "dense" in names and meta.is_file():
        try:
            variant = json.loads(meta.read_text(encoding="utf-8")).get("variant")
        except (OSError, ValueError):
            variant = None
        if variant == "both":
            return (
                "its dense adapter maps the stored document vectors too (variant 'both'), "
                "and Milvus holds them unmapped"
            )
    return None


@dataclass(frozen=True)
class _Request:
    """One ANN request of a ``hybrid_search``: a query vector, its field and params."""

    remote: Any  # ``milvus_index._Remote``
    data: Any
    params: dict[str, Any]
    vector: SparseVec | None = None  # a sparse query's, kept for explanations


def _request(name: str, retriever: Any, query: Query, depth: int) -> _Request | None:
    """The request of retriever ``name`` for ``query`` (None when the query has no terms
    left for a sparse retriever)."""
    params: dict[str, Any] = {}
    data: Any
    vector = None
    if name in ("sparse", "splade"):
        vector = retriever.encode_query(query)
        data = sparse_query(vector.indices, vector.values)
        remote = getattr(retriever.searcher.engine, "remote", None)
        params = SPARSE_SEARCH
        if not data:
            return None
    elif name == "dense":
        adapter = retriever.adapter
        if adapter is not None and adapter.docs is not None:
            raise InputError(
                "Milvus fusion cannot use a two-sided adapter (it maps the stored document "
                "vectors, which Milvus holds unmapped): use the hybrid pipeline"
            )
        data = [float(x) for x in retriever.encode([query.text])[0]]
        index = retriever.index
        remote = getattr(index, "remote", None)
        if remote is not None:
            params = index.search_params(depth)
    else:
        raise InputError(f"Milvus holds no {name!r} vectors; it fuses {FUSED_IN_MILVUS}")
    if remote is None:
        raise InputError(f"the {name!r} sub-index is not held by Milvus: use the hybrid pipeline")
    return _Request(remote, data, params, vector)


@dataclass(frozen=True)
class MilvusFusion:
    """A pipeline's fusion run by Milvus ``hybrid_search`` (the pipeline's
    ``ServerFusion``): retrieval and fusion in one call."""

    method: Method = "rrf"
    k: int = RRF_K  # rrf only
    weights: Mapping[str, float] = field(default_factory=dict)  # weighted only

    def describe(self) -> str:
        if self.method == "rrf":
            return f"Milvus hybrid_search, RRFRanker k={self.k}"
        shown = ", ".join(f"{n}={w:g}" for n, w in sorted(self.weights.items()))
        return f"Milvus hybrid_search, WeightedRanker (arctan-normalized), weights {shown}"

    def search(
        self,
        query: Query,
        retrievers: Mapping[str, Any],
        depth: int,
        check: Callable[[str], None],
        pool: Executor,
    ) -> tuple[Ranking, dict[str, SparseVec]]:
        """The top ``depth`` of ``query``, fused by Milvus over ``retrievers``' fields, and
        the sparse query vectors (for explanations). The queries are encoded on ``pool``,
        concurrently; ``check(stage)`` raises once the caller's deadline has passed."""
        if not query.text.strip():
            return Ranking(query.query_id, ()), {}
        names = [n for n in FUSED_IN_MILVUS if n in retrievers]
        if sorted(names) != sorted(retrievers) or len(names) < 2:
            raise InputError(
                f"Milvus fuses two or more of {', '.join(FUSED_IN_MILVUS)}, not "
                f"{', '.join(sorted(retrievers))}"
            )
        made = pool.map(lambda n: (n, _request(n, retrievers[n], query, depth)), names)
        requests = [(n, r) for n, r in made if r is not None]
        encoded = {n: r.vector for n, r in requests if r.vector is not None}
        if not requests:
            return Ranking(query.query_id, ()), encoded
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        reqs = [
            AnnSearchRequest(
                data=[r.data],
                anns_field=r.remote.field,
                param={"metric_type": "IP", "params": r.params},
                limit=depth,
            )
            for _, r in requests
        ]
        ranker: Any
        if self.method == "rrf":
            ranker = RRFRanker(self.k)
        else:
            ranker = WeightedRanker(*(self.weights.get(n, 1.0) for n, _ in requests))
        remote = requests[0][1].remote
        check("Milvus hybrid_search")
        try:
            (hits,) = remote.client.hybrid_search(
                remote.collection, reqs, ranker, limit=depth, output_fields=["doc_id"]
            )
        except Exception as exc:  # the server's error, said as the collection's state
            raise CollectionError(
                f"Milvus hybrid_search on {remote.collection!r} at {remote.uri} failed "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc
        key = f"milvus-{self.method}"
        fused = [(str(h["entity"]["doc_id"]), float(h["distance"])) for h in hits]
        ranking = Ranking(
            query.query_id,
            tuple(Hit(d, score, {key: (i, score)}) for i, (d, score) in enumerate(fused, start=1)),
        )
        return ranking, encoded
