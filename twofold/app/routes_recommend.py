"""``POST /v1/recommend``: multi-interest recommendations (kNN-Embed) for a history.

A thin route: the request is validated here, the work is
``twofold.search.interests.InterestRetriever.recommend`` on a pipeline thread under the
service's time budget. Its retriever is opened with the collection, at load
(``CollectionState.interests``); it shares the collection's opened dense index (and so
its encoder) with the dense retriever.

``create_app`` includes ``router`` behind the
API key.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twofold.app.deps import State
from twofold.app.schemas import (
    MAX_DOC_ID_CHARS,
    MAX_K,
    MAX_QUERY_CHARS,
    NOT_BLANK,
    ErrorOut,
    Int,
    MixtureComponentOut,
    absent,
    bounded_int,
)
from twofold.app.state import AppState, CollectionState
from twofold.app.work import Deadline, arrived
from twofold.core.errors import InputError, NotFoundError
from twofold.models.knn_embed import MixtureParams, UserMixture
from twofold.search.interests import InterestRetriever, Recommendation

MAX_HISTORY = 200
# Free-text history items are encoded per request (doc ids are looked up, not encoded):
# their total length bounds that cost, about eight full-length queries.
MAX_HISTORY_TEXT_CHARS = 8 * MAX_QUERY_CHARS  # a bound checked on parse, before tokenizing
# What free text costs is its tokens: eight documents of 256 tokens (the build's default
# length) a request. Under the character cap alone, text of one token per character (CJK,
# which BERT's tokenizer splits character by character) cost up to 8,000, four times that.
MAX_HISTORY_TEXT_TOKENS = 8 * 256


class HistoryDoc(BaseModel):
    """A history entry given as an object naming a document."""

    model_config = ConfigDict(extra="forbid", strict=True)

    doc_id: str = Field(min_length=1, max_length=MAX_DOC_ID_CHARS)


class HistoryText(BaseModel):
    """A history entry given as free text (encoded like a query)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(
        min_length=1, max_length=MAX_QUERY_CHARS, json_schema_extra={"pattern": NOT_BLANK}
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a history text is blank")
        return value


DocIdText = Annotated[str, Field(min_length=1, max_length=MAX_DOC_ID_CHARS)]
# exactly one of ``doc_id`` or ``text``: two object shapes, as the schema shows them
HistoryItem = HistoryDoc | HistoryText


class MixtureSpec(BaseModel):
    """kNN-Embed mixture parameters (``twofold.models.knn_embed.MixtureParams``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    temperature: float = Field(MixtureParams.temperature, ge=0, le=10, description="tau")
    neighbour_weight: float = Field(
        MixtureParams.neighbour_weight, ge=0, le=1, description="alpha: kNN smoothing"
    )
    uniform_weight: float = Field(
        MixtureParams.uniform_weight, ge=0, le=1, description="beta: uniform prior"
    )
    neighbours: Int = Field(MixtureParams.n_neighbours, ge=0, le=200)
    max_components: bounded_int(1, 1000) | None = None  # type: ignore[valid-type]
    query_mode: Literal["user", "component"] = MixtureParams.query_mode
    component_blend: float = Field(MixtureParams.component_blend, ge=0, le=1)

    def params(self) -> MixtureParams:
        return MixtureParams(
            temperature=self.temperature,
            neighbour_weight=self.neighbour_weight,
            uniform_weight=self.uniform_weight,
            n_neighbours=self.neighbours,
            max_components=self.max_components,
            query_mode=self.query_mode,
            component_blend=self.component_blend,
        )


# Hit fields a request may ask for (``fields``); ``rank`` and ``doc_id`` always come.
RecommendField = Literal["rank", "doc_id", "score", "interest", "filled", "title", "text"]
RECOMMEND_FIELDS: tuple[str, ...] = get_args(RecommendField)


class RecommendRequest(BaseModel):
    """``history``: doc ids (strings) and/or ``{"doc_id": ...}`` / ``{"text": ...}`` objects;
    the texts together at most ``MAX_HISTORY_TEXT_CHARS`` characters and
    ``MAX_HISTORY_TEXT_TOKENS`` tokens of the collection's dense encoder, after its
    truncation (their encoding is the request's cost).

    No ``offset``: ``k`` is split over the interests in proportion to their weights, so the
    list for ``k = 20`` does not begin with the list for ``k = 10``, and a page of a longer
    list would not continue a shorter one. Ask for the ``k`` you show."""

    model_config = ConfigDict(extra="forbid", strict=True)

    history: list[
        Annotated[str, Field(min_length=1, max_length=MAX_DOC_ID_CHARS)] | HistoryItem
    ] = Field(min_length=1, max_length=MAX_HISTORY)
    k: Int = Field(10, ge=1, le=MAX_K, description="the budget N")
    collection: str | None = Field(None, max_length=256, description="default: the first")
    method: Literal["knn_embed", "single_vector"] = "knn_embed"
    order: Literal["proportional", "score"] = Field(
        "proportional", description="interleave components in proportion, or sort by score"
    )
    mixture: MixtureSpec = Field(default_factory=lambda: MixtureSpec.model_validate({}))
    fields: list[RecommendField] | None = Field(
        None,
        max_length=len(RECOMMEND_FIELDS),
        description="the hit fields to return (`rank` and `doc_id` always come); default: "
        "all of them. Without `title` and `text` no document is read",
    )

    @model_validator(mode="after")
    def _text_cost(self) -> RecommendRequest:
        total = sum(len(t) for t in self.split()[1])
        if total > MAX_HISTORY_TEXT_CHARS:
            raise ValueError(
                f"the history's texts total {total} characters; at most "
                f"{MAX_HISTORY_TEXT_CHARS} are encoded per request (send doc ids, or "
                "fewer or shorter texts)"
            )
        return self

    def split(self) -> tuple[list[str], list[str]]:
        ids: list[str] = []
        texts: list[str] = []
        for item in self.history:
            if isinstance(item, str):
                ids.append(item)
            elif isinstance(item, HistoryDoc):
                ids.append(item.doc_id)
            else:
                texts.append(item.text)
        return ids, texts


IF_ASKED = "; absent when the request's `fields` leaves it out"


class RecommendHit(BaseModel):
    """One hit; the fields after ``doc_id`` come unless ``fields`` leaves them out (then
    they are absent, never null)."""

    rank: int
    doc_id: str
    score: float | None = Field(
        None,
        exclude_if=absent,
        description="inner product with the component's query vector" + IF_ASKED,
    )
    interest: int | None = Field(
        None,
        exclude_if=absent,
        description="the interest cluster the document belongs to" + IF_ASKED,
    )
    filled: bool | None = Field(
        None,
        exclude_if=absent,
        description="true when it fills a slot a small cluster left empty" + IF_ASKED,
    )
    title: str | None = Field(None, exclude_if=absent, description="the doc's" + IF_ASKED)
    text: str | None = Field(None, exclude_if=absent, description="the doc's full text" + IF_ASKED)


class RecommendResponse(BaseModel):
    request_id: str
    collection: str
    method: str
    k: int
    hits: list[RecommendHit]
    mixture: list[MixtureComponentOut] = Field(description="components kept, heaviest first")
    took_ms: float


def interest_retriever(state: AppState, cs: CollectionState) -> InterestRetriever:
    """The collection's interests retriever (opened with the collection), or a 404 that
    says how to build one."""
    if cs.interests is None:
        raise NotFoundError(
            f"collection {cs.name!r} has no interests index (it has "
            f"{', '.join(cs.collection.retrievers)}); rebuild with "
            "--retrievers dense,interests"
        )
    return cs.interests


def _run(
    state: AppState, body: RecommendRequest, request_id: str, started: float, deadline: Deadline
) -> RecommendResponse:
    """On a pipeline thread, holding the collection: recommend, then read the documents;
    ``deadline`` is checked before each (as ``service.search`` does between its stages)."""
    with state.lease(body.collection) as cs:
        retriever = interest_retriever(state, cs)
        ids, texts = body.split()
        # tokenized once: counted here, then encoded from the same tokens
        tokenized = retriever.tokenize_texts(texts)
        if tokenized.total > MAX_HISTORY_TEXT_TOKENS:
            raise InputError(
                f"the history's texts take {tokenized.total} tokens to encode; at most "
                f"{MAX_HISTORY_TEXT_TOKENS} are encoded per request (send doc ids, or fewer "
                "or shorter texts)"
            )
        deadline.check("recommend")
        rec: Recommendation = retriever.recommend(
            ids, body.k, body.mixture.params(), tokenized, method=body.method, order=body.order
        )
        fields = frozenset(RECOMMEND_FIELDS if body.fields is None else body.fields)
        docs = cs.collection.docs
        read_docs = bool(fields & {"title", "text"})
        if read_docs:
            deadline.check("document reads")
        hits = []
        for rank, h in enumerate(rec.hits, start=1):
            out: dict[str, Any] = {}
            for name in fields & {"score", "interest", "filled"}:
                out[name] = getattr(h, name)
            if read_docs:
                doc = docs.get(h.doc_id)
                if "title" in fields:
                    out["title"] = doc.title
                if "text" in fields:
                    out["text"] = doc.text
            hits.append(RecommendHit(rank=rank, doc_id=h.doc_id, **out))
        return RecommendResponse(
            request_id=request_id,
            collection=cs.name,
            method=rec.method,
            k=body.k,
            hits=hits,
            mixture=mixture_out(rec.mixture),
            took_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )


ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 429, 503, 504)
}
# create_app includes it behind the API key
router = APIRouter(prefix="/v1", tags=["recommend"], responses=ERRORS)


@router.post(
    "/recommend",
    response_model=RecommendResponse,
    summary="diverse recommendations for a history (kNN-Embed)",
)
async def recommend(body: RecommendRequest, request: Request, state: State) -> RecommendResponse:
    """Split ``k`` across the history's interests in proportion to ``p(c|u)`` and search
    each interest's cluster; history documents are never returned. An unknown doc id
    in the history is a 404 that names every unknown id."""
    started = time.perf_counter()
    interest_retriever(state, state.collection(body.collection))  # 404s before queueing
    deadline = state.deadline(arrived(request), state.settings.time_budget_ms / 1000.0)
    request_id = str(request.scope.get("state", {}).get("request_id", ""))
    return await state.run(deadline, _run, state, body, request_id, started, deadline)


def mixture_out(mixture: UserMixture | None) -> list[MixtureComponentOut]:
    """The kept components of a mixture as the API shows them, heaviest first."""
    return [
        MixtureComponentOut(interest=c.cluster, weight=round(c.weight, 6), budget=c.budget)
        for c in (mixture.components if mixture else ())
    ]
