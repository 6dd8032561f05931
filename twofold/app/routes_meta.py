"""Collections, documents, health, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from twofold.app.deps import State
from twofold.app.routes_search import ERRORS
from twofold.app.schemas import (
    MAX_DOC_ID_CHARS,
    CollectionOut,
    CollectionsResponse,
    DocOut,
    PipelineOut,
)
from twofold.app.state import CollectionState, Startup
from twofold.search.pipeline import describe_pipeline

v1 = APIRouter(prefix="/v1", tags=["collections"], responses=ERRORS)
# admin routes: included by create_app only when an admin key is set, behind it
admin = APIRouter(prefix="/v1", tags=["admin"], responses={**ERRORS, 409: ERRORS[400]})
ops = APIRouter(tags=["operations"])


def _collection_out(cs: CollectionState) -> CollectionOut:
    manifest = cs.collection.manifest
    return CollectionOut(
        name=cs.name,
        doc_count=manifest.doc_count,
        retrievers=list(cs.retrievers),
        pipelines=[PipelineOut(**describe_pipeline(cs.collection, name)) for name in cs.pipelines],
        default_pipeline=cs.default_pipeline,
        built=manifest.build.get("created"),
        pipeline_config=dict(manifest.pipelines),
    )


@v1.get("/collections", response_model=CollectionsResponse)
def collections(state: State) -> CollectionsResponse:
    out = [_collection_out(cs) for cs in state.collections.values()]
    reranker = state.reranker.name if state.reranker is not None else None
    return CollectionsResponse(default=state.default_collection, collections=out, reranker=reranker)


@admin.post("/collections/{name}/reload", response_model=CollectionOut)
async def reload(
    state: State, name: Annotated[str, Path(min_length=1, max_length=256)]
) -> CollectionOut:
    """Reopen a collection from disk (after a rebuild or ``tune-fusion``) and swap it in
    once it is warm; requests keep being answered by the old one meanwhile, on every
    search thread (the reload has a thread of its own). One reload at a time: a second
    one while it runs is a 409."""
    fresh = await asyncio.wrap_future(state.start_reload(name))
    return _collection_out(fresh)


# ``:path`` so that an id with "/" in it (escaped as %2F or not) reaches the lookup, which
# is a dict of the collection's ids: no filesystem path is ever built from it.
@v1.get("/docs/{doc_id:path}", response_model=DocOut)
def get_doc(
    state: State,
    doc_id: Annotated[str, Path(min_length=1, max_length=MAX_DOC_ID_CHARS)],
    collection: Annotated[str | None, Query(max_length=256)] = None,
) -> DocOut:
    with state.lease(collection) as cs:
        doc = cs.collection.docs.get(doc_id)
    return DocOut(
        collection=cs.name,
        doc_id=doc.doc_id,
        title=doc.title,
        text=doc.text,
        metadata=dict(doc.metadata),
    )


@ops.get("/healthz")
def healthz(request: Request, response: Response) -> dict[str, str]:
    """The process is up (liveness), also while collections load; 503 ``failed`` once
    loading has failed (a restart is what helps then)."""
    startup: Startup = request.app.state.startup
    if startup.status == "failed":
        response.status_code = 503
        return {"status": "failed", "detail": str(startup.error)}
    return {"status": "ok"}


@ops.get("/readyz")
def readyz(request: Request, response: Response) -> dict[str, object]:
    """Collections and models are loaded and warmed up (readiness): 503 ``loading``
    until then, 503 ``failed`` when loading failed."""
    startup: Startup = request.app.state.startup
    state = startup.state
    if state is None or not state.ready:
        response.status_code = 503
        if startup.status == "failed":
            return {"status": "failed", "detail": str(startup.error)}
        return {"status": "loading"}
    out: dict[str, object] = {"status": "ready", "collections": list(state.collections)}
    if state.refused:  # served without them; the reasons say what to fix
        out["refused"] = dict(state.refused)
    return out


@ops.get("/metrics", response_class=Response)
def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
