"""What a search request does, between the schemas and the pipeline (no HTTP here).

``search`` runs on a pipeline thread: it picks the pipeline (named, or ad hoc from
``retrievers`` + ``fusion`` + ``rerank``), runs it under the request's deadline,
and turns the outcome into ``SearchResponse`` with doc titles, snippets, highlights,
per-retriever ranks and, with ``explain``, term contributions from every retriever
that can explain itself (the sparse ones).

With ``diversify`` the pipeline runs to the retrieve depth (at least ``k``) and
``InterestRetriever.diversify_ranking`` cuts that list to ``k``, split across the
interests of its head (kNN-Embed applied to the query's neighbourhood); each hit then
carries its interest id and the response the mixture used.
"""

from __future__ import annotations

import time

from twofold.app.routes_recommend import interest_retriever, mixture_out
from twofold.app.schemas import (
    FusionSpec,
    HitOut,
    SearchRequest,
    SearchResponse,
    SourceOut,
    TermOut,
)
from twofold.app.snippets import highlight_spans, query_stems, snippet
from twofold.app.state import AppState, CollectionState
from twofold.app.work import BudgetExceeded, Deadline
from twofold.core.errors import InputError, NotFoundError
from twofold.core.types import Query
from twofold.search.fusion import FusionConfig
from twofold.search.interests import DiversifiedRanking
from twofold.search.pipeline import (
    DeadlineExceeded,
    Depths,
    Pipeline,
    SearchOutcome,
    make_pipeline,
)

RERANK_SHARE = 0.8  # of the request budget the reranker may use; the rest is slack


def budget_s(state: AppState, request: SearchRequest) -> float:
    ms = state.settings.time_budget_ms
    if request.budget_ms is not None:
        ms = min(ms, request.budget_ms)
    return ms / 1000.0


def choose_pipeline(state: AppState, cs: CollectionState, request: SearchRequest) -> Pipeline:
    if request.retrievers is None:
        return cs.pipeline(request.pipeline or cs.default_pipeline)
    if request.rerank and state.reranker is None:
        raise InputError(
            "rerank was asked for but the service has no reranker; start it with "
            "--reranker DIR (or TWOFOLD_RERANKER)"
        )
    unknown = [r for r in request.retrievers if r not in cs.retrievers]
    if unknown:
        raise NotFoundError(
            f"collection {cs.name!r} has no retriever {', '.join(map(repr, unknown))}; "
            f"it has {', '.join(cs.retrievers)}"
        )
    spec = request.fusion or FusionSpec.model_validate({})
    stray = sorted(set(spec.weights) - set(request.retrievers))
    if stray:
        # a weight for a retriever the request does not run would be silently ignored
        raise InputError(
            f"fusion weights name {', '.join(map(repr, stray))}, not among the request's "
            f"retrievers; valid names: {', '.join(request.retrievers)}"
        )
    fusion = FusionConfig(
        spec.method, spec.k, spec.normalization, spec.combination, dict(spec.weights)
    )
    return make_pipeline(
        cs.collection,
        "custom",
        request.retrievers,
        fusion=fusion,
        reranker=state.reranker if request.rerank else None,
        depths=Depths(state.settings.retrieve_depth, state.settings.rerank_depth),
        opened=cs.retrievers,
    )


def _explain(
    pipeline: Pipeline, query: Query, doc_id: str, deadline: Deadline
) -> dict[str, list[TermOut]]:
    """Per retriever that can explain itself (``retriever.searcher.explain(text, doc_id)``,
    as the sparse retrievers do), the matched query terms, largest contribution first."""
    out: dict[str, list[TermOut]] = {}
    for name, retriever in pipeline.retrievers.items():
        explain = getattr(getattr(retriever, "searcher", None), "explain", None)
        if not callable(explain):
            continue
        deadline.check("explain")
        out[name] = [
            TermOut(
                term=str(c.term),
                query_weight=float(c.query_weight),
                doc_weight=float(c.doc_weight),
                contribution=float(c.contribution),
            )
            for c in explain(query.text, doc_id)
        ]
    return out


def _run(pipeline: Pipeline, query: Query, k: int, deadline: Deadline) -> SearchOutcome:
    """The pipeline under ``deadline``: the reranker may use ``RERANK_SHARE`` of the budget
    (then the fused ranking stands, ``degraded``); past the deadline no stage starts."""
    try:
        return pipeline.run(query, k, deadline.share(RERANK_SHARE), stop_at=deadline.at)
    except DeadlineExceeded as exc:
        if deadline.stops is not None:
            deadline.stops.labels("pipeline").inc()
        raise BudgetExceeded(
            f"{exc} (budget {deadline.budget_s * 1000:.0f} ms); raise budget_ms"
        ) from None


def search_batch(
    state: AppState, requests: list[SearchRequest], request_id: str, deadline: Deadline
) -> list[SearchResponse]:
    """Every search of a batch, in order, under the batch's one deadline (each also under
    its own ``budget_ms`` when lower)."""
    return [search(state, item, f"{request_id}-{i}", deadline) for i, item in enumerate(requests)]


def search(
    state: AppState, request: SearchRequest, request_id: str, deadline: Deadline
) -> SearchResponse:
    """One search under ``deadline`` (from the request's arrival), checked between the
    stages: retrievers, fusion, reranking, diversify, document reads, explain."""
    started = time.perf_counter()
    deadline = deadline.within(budget_s(state, request))
    deadline.check("the search")
    with state.lease(request.collection) as cs:
        return _search(state, cs, request, request_id, deadline, started)


def _search(
    state: AppState,
    cs: CollectionState,
    request: SearchRequest,
    request_id: str,
    deadline: Deadline,
    started: float,
) -> SearchResponse:
    pipeline = choose_pipeline(state, cs, request)
    # before the search: a collection without interests is a 400 that says how to rebuild
    interests = interest_retriever(state, cs) if request.diversify else None
    query = Query(request_id, request.query)
    diversified: DiversifiedRanking | None = None
    if interests is None:
        outcome = _run(pipeline, query, request.k, deadline)
    else:
        # the whole candidate list, so each interest has its own hits to choose from
        deep = _run(pipeline, query, max(request.k, state.settings.retrieve_depth), deadline)
        deadline.check("diversify")
        t0 = time.perf_counter()
        diversified = interests.diversify_ranking(deep.ranking, request.k)
        timings = {**deep.timings_ms, "diversify": round((time.perf_counter() - t0) * 1000.0, 3)}
        outcome = SearchOutcome(diversified.ranking, timings, deep.degraded)
    response = to_response(
        cs, pipeline, query, request, outcome, request_id, started, deadline, diversified
    )
    for stage, ms in outcome.timings_ms.items():
        state.metrics.stage.labels(pipeline.name, stage).observe(ms / 1000.0)
    if outcome.degraded:
        state.metrics.degraded.labels(pipeline.name).inc()
    return response


def to_response(
    cs: CollectionState,
    pipeline: Pipeline,
    query: Query,
    request: SearchRequest,
    outcome: SearchOutcome,
    request_id: str,
    started: float,
    deadline: Deadline,
    diversified: DiversifiedRanking | None = None,
) -> SearchResponse:
    stems = query_stems(request.query)
    interests = diversified.interests if diversified is not None else None
    hits = []
    for rank, hit in enumerate(outcome.ranking.hits, start=1):
        deadline.check("document reads and snippets")
        doc = cs.collection.docs.get(hit.doc_id)
        text_snippet, spans = snippet(doc.text, stems)
        hits.append(
            HitOut(
                rank=rank,
                doc_id=hit.doc_id,
                score=hit.score,
                title=doc.title,
                text=doc.text,
                snippet=text_snippet,
                highlights=spans,
                title_highlights=highlight_spans(doc.title, stems),
                sources={n: SourceOut(rank=r, score=s) for n, (r, s) in hit.sources.items()},
                terms=_explain(pipeline, query, hit.doc_id, deadline) if request.explain else None,
                interest=interests[rank - 1] if interests is not None else None,
            )
        )
    mixture = mixture_out(diversified.mixture) if diversified is not None else None
    return SearchResponse(
        request_id=request_id,
        collection=cs.name,
        pipeline=pipeline.name,
        query=request.query,
        k=request.k,
        hits=hits,
        timings_ms=outcome.timings_ms,
        took_ms=round((time.perf_counter() - started) * 1000.0, 3),
        degraded=bool(outcome.degraded),
        degraded_reasons=list(outcome.degraded),
        mixture=mixture,
    )
