"""The query pipeline: retrievers -> fusion -> optional reranker, each with its depth.

``Pipeline.run`` reads top to bottom: every retriever fetches ``depths.retrieve``
hits, all at once on a thread pool (one whose fusion weight is 0 is not run, and an
``Explainer``'s query vector is kept in the outcome for explanations); a single list
passes through, several are fused; the reranker (if any)
rescores the top ``depths.rerank`` fused candidates and the rest keep their fused
order below them; the top ``k`` are returned. Optional stages degrade instead of
failing: a retriever that raises is left out of the fusion, a reranker that raises
or runs out of time leaves the fused ranking, and the outcome says so in
``degraded``.

Named pipelines are defined here, once (``PIPELINES``), and used alike by
``twofold eval``, ``twofold search``, ``twofold tune-fusion`` and the HTTP API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, Literal, Protocol, runtime_checkable

from twofold.core.errors import InputError, TwofoldError
from twofold.core.registry import Registry
from twofold.core.types import Hit, Query, Ranking, SparseVec, settle
from twofold.indexing.collection import Collection
from twofold.search.fusion import FusionConfig
from twofold.search.lanes import Lanes
from twofold.search.milvus_fusion import MilvusFusion, fusion_problem, milvus_retrievers
from twofold.search.retrievers import RETRIEVERS, Explainer, Retriever

log = logging.getLogger(__name__)

FUSED = "fusion"  # key of the fused (rank, score) in a reranked hit's sources
RERANKED = "rerank"


class DeadlineExceeded(TwofoldError):
    """The caller's hard deadline (``Pipeline.run``'s ``stop_at``) passed between stages."""


def _check(stop_at: float | None, stage: str) -> None:
    if stop_at is not None and time.monotonic() >= stop_at:
        raise DeadlineExceeded(f"the time budget ran out before {stage}")


class Fuser(Protocol):
    def fuse(self, query_id: str, rankings: Mapping[str, Ranking], depth: int) -> Ranking: ...


@runtime_checkable
class ServerFusion(Protocol):
    """A fusion run by the engine that holds the vectors (``milvus_fusion``): it
    retrieves and fuses in one call, so the pipeline runs neither stage itself."""

    def search(
        self,
        query: Query,
        retrievers: Mapping[str, Retriever],
        depth: int,
        check: Callable[[str], None],
        pool: Executor,
    ) -> tuple[Ranking, dict[str, SparseVec]]: ...


class Reranker(Protocol):
    """Scores (query, document text) pairs; higher is more relevant.

    ``deadline`` is a ``time.monotonic()`` instant; past it the reranker raises
    instead of starting another batch.
    """

    name: str

    def score(
        self, query: str, texts: Sequence[str], deadline: float | None = None
    ) -> Sequence[float]: ...


@dataclass(frozen=True)
class Depths:
    """``retrieve``: hits each retriever fetches (and the fused list keeps);
    ``rerank``: fused candidates the reranker rescores."""

    retrieve: int = 100
    rerank: int = 50

    def __post_init__(self) -> None:
        if self.retrieve < 1 or self.rerank < 1:
            raise InputError("pipeline depths must be >= 1")


@dataclass(frozen=True)
class SearchOutcome:
    """What one query through a pipeline gives: the ranking plus how it was made.

    ``encoded``: the query vector of each ``Explainer`` retriever that ran, for
    explanations of the hits (one encoding per retriever and request)."""

    ranking: Ranking
    timings_ms: dict[str, float]
    degraded: tuple[str, ...] = ()
    encoded: Mapping[str, SparseVec] = field(default_factory=dict)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


@cache
def _retrieve_pool() -> ThreadPoolExecutor:
    """The threads that run a pipeline's retrievers, shared and long-lived (a JVM-attached
    thread should not be created per query)."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="twofold-retrieve")


@dataclass
class Pipeline:
    """Retrievers -> fuser -> optional reranker. ``doc_text`` gives the text a reranker
    reads for a doc id (title + text from the collection's doc store)."""

    name: str
    retrievers: Mapping[str, Retriever]
    fuser: Fuser | ServerFusion = field(default_factory=FusionConfig)
    reranker: Reranker | None = None
    depths: Depths = field(default_factory=Depths)
    doc_text: Callable[[str], str] | None = None
    lanes: Lanes = field(default_factory=Lanes, repr=False, compare=False)

    def search(self, query: Query, k: int = 10) -> Ranking:
        """The top ``k`` for ``query`` (what evaluation scores)."""
        return self.run(query, k).ranking

    def run(
        self,
        query: Query,
        k: int = 10,
        deadline: float | None = None,
        stop_at: float | None = None,
    ) -> SearchOutcome:
        """``deadline``: the reranker's (past it the fused ranking is kept, ``degraded``);
        ``stop_at``: the caller's hard deadline (``time.monotonic()`` instants both),
        checked between stages: past it ``DeadlineExceeded`` and no further work."""
        timings: dict[str, float] = {}
        degraded: list[str] = []
        # A lone retriever with no reranker needs only the top k; fusion and reranking
        # need the deeper candidate lists.
        passthrough = len(self.retrievers) == 1 and self.reranker is None
        depth = k if passthrough else max(self.depths.retrieve, k)

        _check(stop_at, "retrievers")
        encoded: dict[str, SparseVec] = {}
        if isinstance(self.fuser, ServerFusion):
            t0 = time.perf_counter()
            fused, encoded = self.fuser.search(
                query,
                self.retrievers,
                depth,
                lambda stage: _check(stop_at, stage),
                _retrieve_pool(),
            )
            timings["retrieve+fuse"] = _ms(t0)
        else:
            # without a reranker only the top k of the fusion is read: no deeper list made
            keep = depth if self.reranker is not None else k
            fused, encoded = self._retrieve_and_fuse(
                self.fuser, query, depth, timings, degraded, stop_at, keep
            )

        ranking = fused
        if self.reranker is not None:
            _check(stop_at, "reranking")
            t0 = time.perf_counter()
            try:
                ranking = self._rerank(self.reranker, query, fused, deadline)
            except Exception as exc:
                log.warning("reranker %s degraded: %s", self.reranker.name, exc)
                degraded.append(f"rerank skipped: {exc}")
            timings["rerank"] = _ms(t0)
        return SearchOutcome(ranking.top(k), timings, tuple(degraded), encoded)

    def _retrieve_and_fuse(
        self,
        fuser: Fuser,
        query: Query,
        depth: int,
        timings: dict[str, float],
        degraded: list[str],
        stop_at: float | None,
        keep: int,
    ) -> tuple[Ranking, dict[str, SparseVec]]:
        """Every retriever's top ``depth``, fused into the top ``keep`` (<= ``depth``; a
        lone retriever's list passes); the sparse query vectors made on the way, kept for
        explanations."""
        # Retrievers run concurrently (Lucene, FAISS and numpy release the GIL), so the
        # retrieve stage costs about the slowest one; one whose fusion weight is 0 is not
        # run (it could only add zero-weight candidates).
        weights = getattr(fuser, "weights", None) or {}
        active = {n: r for n, r in self.retrievers.items() if weights.get(n, 1.0) != 0}
        active = active or dict(self.retrievers)

        def retrieve(retriever: Retriever) -> tuple[Ranking, float, SparseVec | None]:
            t0 = time.perf_counter()
            if isinstance(retriever, Explainer):  # keep its encoding for explanations
                vector = retriever.encode_query(query)
                return retriever.retrieve_encoded(query, vector, depth), _ms(t0), vector
            return retriever.retrieve(query, depth), _ms(t0), None

        # in at most one lane per core, dearest first (twofold.search.lanes); a lone
        # retriever runs on this thread
        tasks = {n: partial(retrieve, r) for n, r in active.items()}
        futures = self.lanes.run(tasks, _retrieve_pool(), cost_of=lambda out: out[1])
        rankings: dict[str, Ranking] = {}
        encoded: dict[str, SparseVec] = {}
        for name, future in futures.items():
            try:
                rankings[name], timings[f"retrieve.{name}"], vector = future.result()
            except Exception as exc:
                if len(self.retrievers) == 1:
                    raise
                log.exception("retriever %s failed; fusing the others", name)
                degraded.append(f"retriever {name} failed: {exc}")
                continue
            if vector is not None:
                encoded[name] = vector
        if not rankings:
            raise TwofoldError(f"every retriever of pipeline {self.name!r} failed")

        _check(stop_at, "fusion")
        t0 = time.perf_counter()
        if len(self.retrievers) == 1:
            ((name, single),) = rankings.items()
            fused = Ranking(
                query.query_id,
                tuple(
                    Hit(h.doc_id, h.score, {name: (i, h.score)})
                    for i, h in enumerate(single.hits[:keep], start=1)
                ),
            )
        else:
            fused = fuser.fuse(query.query_id, rankings, keep)
            timings["fuse"] = _ms(t0)
        return fused, encoded

    def _rerank(
        self, reranker: Reranker, query: Query, fused: Ranking, deadline: float | None
    ) -> Ranking:
        if deadline is not None and time.monotonic() >= deadline:
            raise TwofoldError("no time left in the request's budget")
        if self.doc_text is None:
            raise TwofoldError("the pipeline has no doc store to read texts from")
        head, tail = fused.hits[: self.depths.rerank], fused.hits[self.depths.rerank :]
        texts = [self.doc_text(h.doc_id) for h in head]
        scores = list(reranker.score(query.text, texts, deadline))
        if len(scores) != len(head):
            raise TwofoldError(f"reranker returned {len(scores)} scores for {len(head)} texts")
        # A trained reranker carries its tuned weight (``alpha``); one without it replaces
        # the fused score (alpha 1).
        alpha = getattr(reranker, "alpha", None)
        if alpha is not None:
            scores = interpolate(scores, [h.score for h in head], float(alpha))
        rescored = sorted(
            (
                (
                    settle(float(s)),
                    Hit(h.doc_id, settle(float(s)), {**h.sources, FUSED: (rank, h.score)}),
                )
                for rank, (h, s) in enumerate(zip(head, scores, strict=True), start=1)
            ),
            key=lambda p: (-p[0], p[1].doc_id),
        )
        reranked = [h for _, h in rescored]
        # Candidates past the rerank depth keep their fused order, below every reranked
        # one: their score is the fused score shifted under the lowest rerank score.
        floor = min((h.score for h in reranked), default=0.0)
        shifted = []
        top_tail = tail[0].score if tail else 0.0
        for rank, h in enumerate(tail, start=len(head) + 1):
            score = floor - 1.0 - (top_tail - h.score)
            shifted.append(Hit(h.doc_id, score, {**h.sources, FUSED: (rank, h.score)}))
        return Ranking(fused.query_id, (*reranked, *shifted))


def interpolate(rerank: Sequence[float], fused: Sequence[float], alpha: float) -> list[float]:
    """``alpha * mm(rerank) + (1 - alpha) * mm(fused)`` per candidate, where ``mm`` is
    min-max over this query's reranked candidates (best 1, worst 0; all 1 when equal), so
    neither score's scale decides the mix."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"interpolation weight alpha must be in [0, 1], not {alpha}")

    def mm(values: Sequence[float]) -> list[float]:
        lo, hi = min(values, default=0.0), max(values, default=0.0)
        return [(v - lo) / (hi - lo) if hi > lo else 1.0 for v in values]

    return [alpha * r + (1.0 - alpha) * f for r, f in zip(mm(rerank), mm(fused), strict=True)]


@dataclass(frozen=True)
class PipelineSpec:
    """A named pipeline. ``retrievers`` None means every retriever the collection has
    (``hybrid``); ``fusion`` None means the collection's tuned fusion for ``hybrid``
    (manifest ``pipelines.hybrid.fusion``), else :func:`family_fusion`. ``milvus``: the
    fusion runs in Milvus (``milvus_fusion``) over the retrievers Milvus holds."""

    name: str
    description: str
    retrievers: tuple[str, ...] | None = None
    fusion: FusionConfig | None = None
    rerank: bool = False
    milvus: Literal["rrf", "weighted"] | None = None


PIPELINES: Registry[PipelineSpec] = Registry("pipeline")
for _spec in (
    PipelineSpec("bm25", "BM25 on Lucene", ("bm25",)),
    PipelineSpec("sparse", "inference-free learned sparse (IDF query side)", ("sparse",)),
    PipelineSpec("splade", "siamese SPLADE", ("splade",)),
    PipelineSpec("dense", "dense bi-encoder on FAISS", ("dense",)),
    PipelineSpec(
        "hybrid",
        "all retrievers, fused: tuned weights when the collection has them, else one vote "
        "per model family (convex, min-max)",
    ),
    PipelineSpec("hybrid-rrf", "all retrievers, plain RRF k=60", fusion=FusionConfig("rrf")),
    PipelineSpec("hybrid+rerank", "hybrid, then the cross-encoder reranker", rerank=True),
    PipelineSpec("bm25+rerank", "BM25, then the cross-encoder reranker", ("bm25",), rerank=True),
    PipelineSpec(
        "milvus-rrf",
        "the retrievers Milvus holds (sparse, splade, dense; not bm25), fused in Milvus by "
        "hybrid_search with RRF k=60",
        milvus="rrf",
    ),
    PipelineSpec(
        "milvus-weighted",
        "the retrievers Milvus holds, fused in Milvus by hybrid_search's WeightedRanker, "
        "one vote per model family",
        milvus="weighted",
    ),
):
    PIPELINES.register(_spec.name, _spec)

TUNED_KEY = "hybrid"  # manifest ``pipelines`` entry that holds the tuned fusion
RERANKER_FOLDER = "reranker"  # a collection's own reranker (``twofold optimize``)

# Model families: ``sparse`` and ``splade`` come from one MLM (splade-tiny) and rank alike,
# so a plain vote of every retriever gives that model two votes.
FAMILIES: Mapping[str, str] = {
    "bm25": "lexical",
    "sparse": "learned-sparse",
    "splade": "learned-sparse",
    "dense": "dense",
}


def family_fusion(retrievers: Sequence[str]) -> FusionConfig:
    """The untuned ``hybrid``: convex combination of min-max scores (Bruch et al. 2023)
    with one equal vote per model family, shared by its members (bm25 + sparse + splade +
    dense -> 1/3, 1/6, 1/6, 1/3)."""
    families: dict[str, list[str]] = {}
    for name in retrievers:
        families.setdefault(FAMILIES.get(name, name), []).append(name)
    weights = {
        name: 1.0 / len(families) / len(members)
        for members in families.values()
        for name in members
    }
    return FusionConfig("convex", weights=weights)


def open_collection_reranker(collection: Collection) -> Reranker | None:
    """The reranker stored in the collection (``COLLECTION/reranker``), if it has one."""
    folder = collection.root / RERANKER_FOLDER
    if not (folder / "config.json").is_file():
        return None
    from twofold.models.reranker import RerankerConfig, load_reranker

    reranker: Reranker = load_reranker(RerankerConfig(str(folder)))
    return reranker


def collection_retrievers(collection: Collection) -> list[str]:
    """The collection's sub-indexes that have a registered retriever (what ``hybrid`` fuses)."""
    return [r for r in collection.retrievers if r in RETRIEVERS]


def spec_retrievers(collection: Collection, spec: PipelineSpec) -> tuple[str, ...]:
    """What ``spec`` runs on ``collection``: its own list, the ones Milvus holds (a Milvus
    fusion), else every retriever (``hybrid``)."""
    if spec.milvus is not None:
        return tuple(milvus_retrievers(collection))
    return spec.retrievers or tuple(collection_retrievers(collection))


def spec_fusion(collection: Collection, spec: PipelineSpec) -> FusionConfig | MilvusFusion:
    """How ``spec`` fuses on ``collection``."""
    retrievers = spec_retrievers(collection, spec)
    if spec.milvus == "weighted":
        return MilvusFusion("weighted", weights=family_fusion(retrievers).weights)
    if spec.milvus == "rrf":
        return MilvusFusion("rrf")
    return spec.fusion or tuned_fusion(collection) or family_fusion(retrievers)


def pipeline_retrievers(collection: Collection, name: str) -> list[str]:
    """The retrievers the named pipeline runs on ``collection`` (``hybrid``: all of them)."""
    return list(spec_retrievers(collection, PIPELINES.get(name)))


def tuned_fusion(collection: Collection) -> FusionConfig | None:
    """The fusion ``twofold tune-fusion`` wrote into the manifest, if it still applies."""
    entry = collection.manifest.pipelines.get(TUNED_KEY)
    if not isinstance(entry, dict) or "fusion" not in entry:
        return None
    if sorted(entry.get("retrievers", [])) != sorted(collection_retrievers(collection)):
        log.warning("tuned fusion in %s is for other retrievers; using RRF", collection.path)
        return None
    return FusionConfig.from_dict(entry["fusion"])


def _doc_text(collection: Collection) -> Callable[[str], str]:
    def text(doc_id: str) -> str:
        return collection.docs.get(doc_id).contents

    return text


def make_pipeline(
    collection: Collection,
    name: str,
    retrievers: Sequence[str],
    fusion: FusionConfig | MilvusFusion | None = None,
    reranker: Reranker | None = None,
    depths: Depths | None = None,
    opened: Mapping[str, Retriever] | None = None,
) -> Pipeline:
    """A pipeline over ``collection`` from its parts (named or ad hoc, e.g. from the API).

    ``opened`` lets a caller share retrievers it already opened (the service does)."""
    if not retrievers:
        raise InputError("a pipeline needs at least one retriever")
    names = list(dict.fromkeys(retrievers))
    missing = [r for r in names if not collection.has(r)]
    if missing:
        raise InputError(
            f"pipeline {name!r} needs {', '.join(missing)}, which collection {collection.name!r} "
            f"lacks (it has {', '.join(collection.retrievers)}); available pipelines: "
            f"{', '.join(available_pipelines(collection, reranker is not None))}"
        )
    for r in names:
        RETRIEVERS.get(r)  # a sub-index with no retriever -> error listing the known ones
    opened = opened or {}
    instances = {r: opened[r] if r in opened else RETRIEVERS.get(r)(collection) for r in names}
    return Pipeline(
        name=name,
        retrievers=instances,
        fuser=fusion or tuned_fusion(collection) or family_fusion(names),
        reranker=reranker,
        depths=depths or Depths(),
        doc_text=_doc_text(collection),
    )


def build_pipeline(
    collection: Collection,
    name: str,
    depth: int = 100,
    reranker: Reranker | None = None,
    rerank_depth: int = 50,
    opened: Mapping[str, Retriever] | None = None,
) -> Pipeline:
    """The named pipeline over ``collection``; says what is missing if it cannot be built."""
    spec = PIPELINES.get(name)
    if spec.rerank and reranker is None:
        reranker = open_collection_reranker(collection)
    if spec.rerank and reranker is None:
        raise InputError(
            f"pipeline {name!r} needs a reranker and none is configured: pass --reranker DIR "
            "(a Hugging Face *ForSequenceClassification directory) to `twofold serve`, "
            "`twofold search` or `twofold eval`, or set TWOFOLD_RERANKER"
        )
    retrievers = spec_retrievers(collection, spec)
    problem = fusion_problem(collection) if spec.milvus else None
    if problem is not None:
        raise InputError(
            f"pipeline {name!r} fuses in Milvus, which it cannot do here: {problem}; "
            "use the hybrid pipeline"
        )
    return make_pipeline(
        collection,
        name,
        retrievers,
        fusion=spec_fusion(collection, spec),
        reranker=reranker if spec.rerank else None,
        depths=Depths(depth, rerank_depth),
        opened=opened,
    )


def available_pipelines(collection: Collection, with_reranker: bool = False) -> list[str]:
    """Named pipelines this collection can run (rerank ones only ``with_reranker``)."""
    names = []
    for n in PIPELINES.names():
        spec = PIPELINES.get(n)
        needed = spec_retrievers(collection, spec)
        fusable = not spec.milvus or fusion_problem(collection) is None
        runnable = (
            bool(needed) and fusable and all(collection.has(r) and r in RETRIEVERS for r in needed)
        )
        if runnable and (with_reranker or not spec.rerank):
            names.append(n)
    return names


def describe_pipeline(collection: Collection, name: str) -> dict[str, Any]:
    """What a named pipeline does on this collection (for listings and the web page)."""
    spec = PIPELINES.get(name)
    retrievers = spec_retrievers(collection, spec)
    fusion = spec_fusion(collection, spec)
    return {
        "name": name,
        "description": spec.description,
        "retrievers": list(retrievers),
        "fusion": fusion.describe() if len(retrievers) > 1 else None,
        "rerank": spec.rerank,
    }
