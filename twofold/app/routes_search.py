"""``POST /v1/search`` and ``POST /v1/search/batch``: thin, the work is in ``service``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from twofold.app import service
from twofold.app.deps import State
from twofold.app.schemas import (
    ErrorOut,
    SearchBatchRequest,
    SearchBatchResponse,
    SearchRequest,
    SearchResponse,
)
from twofold.app.work import arrived

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 429, 503, 504)
}
router = APIRouter(prefix="/v1", tags=["search"], responses=ERRORS)


def _request_id(request: Request) -> str:
    return str(request.scope["state"]["request_id"])


def _json(model: BaseModel) -> Response:
    """Serialize once, in pydantic-core (FastAPI would validate and encode it again)."""
    return Response(model.model_dump_json(), media_type="application/json")


@router.post("/search", response_model=SearchResponse)
async def search(body: SearchRequest, request: Request, state: State) -> Response:
    rid = _request_id(request)
    deadline = state.deadline(arrived(request), service.budget_s(state, body))
    response = await state.run(deadline, service.search, state, body, rid, deadline)
    request.scope["state"]["log"].update(
        pipeline=response.pipeline,
        collection=response.collection,
        k=body.k,
        hits=len(response.hits),
        degraded=response.degraded,
        diversify=body.diversify,
    )
    return _json(response)


@router.post("/search/batch", response_model=SearchBatchResponse)
async def search_batch(body: SearchBatchRequest, request: Request, state: State) -> Response:
    """The searches run one after another under one shared time budget (the service's,
    from the batch's arrival); an item's ``budget_ms`` can only lower its own share."""
    rid = _request_id(request)
    deadline = state.deadline(arrived(request), state.settings.time_budget_ms / 1000.0)
    results = await state.run(
        deadline, service.search_batch, state, list(body.searches), rid, deadline
    )
    request.scope["state"]["log"].update(searches=len(results))
    return _json(SearchBatchResponse(request_id=rid, results=results))
