"""What a search request does, between the schemas and the pipeline (no HTTP here).

``search`` runs on a pipeline thread: it picks the pipeline (named, or ad hoc from
``retrievers`` + ``fusion`` + ``rerank``), runs it under the request's deadline,
and turns hits ``offset + 1 .. offset + k`` of the outcome into ``SearchResponse``
with the hit fields the request asks for (``fields``; default: doc titles, texts,
snippets, highlights, per-retriever ranks) and, with ``explain``, term contributions
from every retriever that can explain itself (the sparse ones), from the query
vectors the search made.

With ``diversify`` the pipeline runs to the retrieve depth (at least ``offset + k``)
and ``InterestRetriever.diversify_ranking`` cuts that list to ``offset + k``, split across the
interests of its head (kNN-Embed applied to the query's neighbourhood); each hit then
carries its interest id and the response the mixture used.
"""

from __future__ import annotations

import time
from typing import Any

from twofold.app.routes_recommend import interest_retriever, mixture_out
from twofold.app.schemas import (
    HIT_FIELDS,
    MAX_K,
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
from twofold.search.retrievers import Explainer

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
    pipeline: Pipeline, outcome: SearchOutcome, doc_id: str, deadline: Deadline
) -> dict[str, list[TermOut]]:
    """Per retriever that can explain itself (an ``Explainer``: the sparse ones) and ran,
    the matched query terms, largest contribution first, from the query vector the
    search made (``outcome.encoded``: one encoding per retriever and request)."""
    out: dict[str, list[TermOut]] = {}
    for name, retriever in pipeline.retrievers.items():
        vector = outcome.encoded.get(name)
        if vector is None or not isinstance(retriever, Explainer):
            continue
        deadline.check("explain")
        out[name] = [
            TermOut(
                term=str(c.term),
                query_weight=float(c.query_weight),
                doc_weight=float(c.doc_weight),
                contribution=float(c.contribution),
            )
            for c in retriever.explain(vector, doc_id)
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
    # the page is hits offset..end of a ranking served to rank MAX_K (a page past it is
    # short: JSON Schema cannot say offset + k <= MAX_K, so that is no error)
    end = min(request.offset + request.k, MAX_K)
    if interests is None:
        outcome = _run(pipeline, query, end, deadline)
    else:
        # the whole candidate list, so each interest has its own hits to choose from
        deep = _run(pipeline, query, max(end, state.settings.retrieve_depth), deadline)
        deadline.check("diversify")
        t0 = time.perf_counter()
        diversified = interests.diversify_ranking(deep.ranking, end)
        timings = {**deep.timings_ms, "diversify": round((time.perf_counter() - t0) * 1000.0, 3)}
        outcome = SearchOutcome(diversified.ranking, timings, deep.degraded, deep.encoded)
    response = to_response(
        cs, pipeline, query, request, outcome, request_id, started, deadline, diversified
    )
    for stage, ms in outcome.timings_ms.items():
        state.metrics.stage.labels(pipeline.name, stage).observe(ms / 1000.0)
    if outcome.degraded:
        state.metrics.degraded.labels(pipeline.name).inc()
    return response


# hit fields that need the document from the doc store / the query's stems
FROM_DOC = frozenset({"title", "text", "snippet", "highlights", "title_highlights"})
FROM_STEMS = frozenset({"snippet", "highlights", "title_highlights"})


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
    """The hits from rank ``offset + 1`` on, with only the fields the request asks for:
    a field left out costs nothing (no doc read when none needs the document, no
    snippet or highlights unless asked)."""
    fields = frozenset(HIT_FIELDS if request.fields is None else request.fields)
    stems = query_stems(request.query) if fields & FROM_STEMS else frozenset()
    interests = diversified.interests if diversified is not None else None
    hits = []
    page = outcome.ranking.hits[request.offset :]
    for rank, hit in enumerate(page, start=request.offset + 1):
        out: dict[str, Any] = {}
        if "score" in fields:
            out["score"] = hit.score
        if "sources" in fields:
            out["sources"] = {n: SourceOut(rank=r, score=s) for n, (r, s) in hit.sources.items()}
        if fields & FROM_DOC:
            deadline.check("document reads and snippets")
            doc = cs.collection.docs.get(hit.doc_id)
            if "title" in fields:
                out["title"] = doc.title
            if "title_highlights" in fields:
                out["title_highlights"] = highlight_spans(doc.title, stems)
            if "text" in fields:
                out["text"] = doc.text
            if fields & {"snippet", "highlights"}:
                text_snippet, spans = snippet(doc.text, stems)
                if "snippet" in fields:
                    out["snippet"] = text_snippet
                if "highlights" in fields:
                    out["highlights"] = spans
        if request.explain:
            out["terms"] = _explain(pipeline, outcome, hit.doc_id, deadline)
        if interests is not None:
            out["interest"] = interests[rank - 1]
        hits.append(HitOut(rank=rank, doc_id=hit.doc_id, **out))
    mixture = mixture_out(diversified.mixture) if diversified is not None else None
    return SearchResponse(
        request_id=request_id,
        collection=cs.name,
        pipeline=pipeline.name,
        query=request.query,
        k=request.k,
        offset=request.offset,
        hits=hits,
        timings_ms=outcome.timings_ms,
        took_ms=round((time.perf_counter() - started) * 1000.0, 3),
        degraded=bool(outcome.degraded),
        degraded_reasons=list(outcome.degraded),
        mixture=mixture,
    )
