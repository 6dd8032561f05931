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

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 503, 504)
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
    response = await state.run(
        service.search, state, body, rid, budget_s=service.budget_s(state, body)
    )
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
    rid = _request_id(request)
    results = []
    for i, item in enumerate(body.searches):
        results.append(
            await state.run(
                service.search, state, item, f"{rid}-{i}", budget_s=service.budget_s(state, item)
            )
        )
    request.scope["state"]["log"].update(searches=len(results))
    return _json(SearchBatchResponse(request_id=rid, results=results))
