"""HTTP request and response schemas (apart from the domain types in ``core.types``).

Limits live here, so OpenAPI shows them and a violation is a 422 that names the field.
Requests are strict (``"10"`` is not a number) and reject unknown fields, so a typo
such as ``"pipline"`` is an error, not a silently ignored option.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_K = 100
MAX_QUERY_CHARS = 1000
MAX_BATCH = 32
MAX_RETRIEVERS = 8
MAX_DOC_ID_CHARS = 512
# below this a budget mostly measures the queue: such requests would only ever be 504s
MIN_BUDGET_MS = 100

Weight = Annotated[float, Field(ge=0, le=1e6)]


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` includes ``776.0`` (a number with no fractional part):
    take it as 776. ``2.5``, ``"10"`` and ``true`` stay errors (requests are strict)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]


def bounded_int(ge: int, le: int) -> Any:
    """``Int`` within [ge, le], for an optional field (the bounds stay in the schema)."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral)]


# a query or text with some non-space character: blank ones are refused by the schema
# The same set both ways: JSON Schema's (ECMA) \s lacks the separators \x1c-\x1f and \x85
# that Python's has, and Python's lacks the BOM \ufeff that ECMA's has.
NOT_BLANK = r"[^\s\u001c-\u001f\u0085]"
_BLANK = re.compile(r"^[\s\ufeff]*$")


def absent(value: object) -> bool:
    """Fields only a diversified search fills are left out of other responses, not null."""
    return value is None


class FusionSpec(BaseModel):
    """Ad hoc fusion (see ``twofold.search.fusion``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    method: Literal["rrf", "score", "convex"] = "rrf"
    k: Int = Field(60, ge=0, le=10_000, description="RRF constant")
    normalization: Literal["min_max", "z_score", "l2"] = "min_max"
    combination: Literal["arithmetic", "geometric", "harmonic"] = "arithmetic"
    weights: dict[str, Weight] = Field(default_factory=dict, max_length=MAX_RETRIEVERS)


# What ``SearchRequest._one_way_to_pick`` checks, said in the schema (JSON Schema 2020-12)
# so that a client (or a fuzzer) reading it knows before sending: not both ``pipeline``
# and ``retrievers``; ``fusion`` and ``rerank`` only with ``retrievers``.
ONE_WAY_TO_PICK: dict[str, Any] = {
    "not": {
        "required": ["pipeline", "retrievers"],
        "properties": {"pipeline": {"type": "string"}, "retrievers": {"type": "array"}},
    },
    "anyOf": [
        {"required": ["retrievers"], "properties": {"retrievers": {"type": "array"}}},
        {"properties": {"fusion": {"type": "null"}, "rerank": {"const": False}}},
    ],
}


# Hit fields a request may ask for (``fields``); ``rank`` and ``doc_id`` always come,
# ``terms`` with ``explain``, ``interest`` with ``diversify``.
HitField = Literal[
    "rank",
    "doc_id",
    "score",
    "title",
    "text",
    "snippet",
    "highlights",
    "title_highlights",
    "sources",
]
HIT_FIELDS: tuple[str, ...] = get_args(HitField)


class SearchRequest(BaseModel):
    """Either ``pipeline`` (a named one) or ``retrievers`` (+ ``fusion``, ``rerank``)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=ONE_WAY_TO_PICK)

    query: str = Field(
        min_length=1, max_length=MAX_QUERY_CHARS, json_schema_extra={"pattern": NOT_BLANK}
    )
    k: Int = Field(10, ge=1, le=MAX_K, description="hits to return")
    offset: Int = Field(
        0,
        ge=0,
        le=MAX_K - 1,
        description=f"hits to skip: the response holds ranks offset+1..offset+k of the "
        f"same ranking, which is served to rank {MAX_K} (past it a page is short)",
    )
    fields: list[HitField] | None = Field(
        None,
        max_length=len(HIT_FIELDS),
        description="the hit fields to return (`rank` and `doc_id` always come); default: "
        "all of them. Leave out `text` (or ask for `doc_id` and `score` only) for smaller, "
        "faster responses",
    )
    collection: str | None = Field(None, max_length=256, description="default: the first")
    pipeline: str | None = Field(None, max_length=64, description="default: the service's")
    retrievers: list[str] | None = Field(None, min_length=1, max_length=MAX_RETRIEVERS)
    fusion: FusionSpec | None = None
    rerank: bool = False
    explain: bool = Field(False, description="add per-hit term contributions where known")
    budget_ms: bounded_int(MIN_BUDGET_MS, 600_000) | None = Field(  # type: ignore[valid-type]
        None, description="lower the service's time budget for this request"
    )
    diversify: bool = Field(
        False,
        description="spread the k hits over the interests of the query's neighbourhood "
        "(kNN-Embed); needs a collection built with --retrievers dense,interests",
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if _BLANK.match(value):
            raise ValueError("the query is blank; send some words to search for")
        return value

    @model_validator(mode="after")
    def _one_way_to_pick(self) -> SearchRequest:
        if self.pipeline is not None and self.retrievers is not None:
            raise ValueError("give either `pipeline` or `retrievers` (+ `fusion`, `rerank`)")
        if self.retrievers is None and (self.fusion is not None or self.rerank):
            raise ValueError("`fusion` and `rerank` go with `retrievers`, not with `pipeline`")
        return self


class SearchBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    searches: list[SearchRequest] = Field(min_length=1, max_length=MAX_BATCH)


class SourceOut(BaseModel):
    rank: int
    score: float


class TermOut(BaseModel):
    """One query term's share of a sparse score: ``contribution = query_weight * doc_weight``."""

    term: str
    query_weight: float
    doc_weight: float
    contribution: float


IF_ASKED = "; absent when the request's `fields` leaves it out"


class HitOut(BaseModel):
    """One hit; the fields after ``doc_id`` come unless the request's ``fields`` leaves
    them out (then they are absent, never null)."""

    rank: int = Field(description="1-based, in the whole ranking (offset + 1 for the first)")
    doc_id: str
    score: float | None = Field(None, exclude_if=absent, description="the ranking's" + IF_ASKED)
    title: str | None = Field(None, exclude_if=absent, description="the doc's" + IF_ASKED)
    text: str | None = Field(None, exclude_if=absent, description="the doc's full text" + IF_ASKED)
    snippet: str | None = Field(
        None,
        exclude_if=absent,
        description="a window of the text around the matched terms" + IF_ASKED,
    )
    highlights: list[tuple[int, int]] | None = Field(
        None,
        exclude_if=absent,
        description="[start, end) character spans of matched terms in `snippet`" + IF_ASKED,
    )
    title_highlights: list[tuple[int, int]] | None = Field(
        None, exclude_if=absent, description="spans of matched terms in `title`" + IF_ASKED
    )
    sources: dict[str, SourceOut] | None = Field(
        None,
        exclude_if=absent,
        description="per retriever (and `fusion` when reranked): rank and score in its list"
        + IF_ASKED,
    )
    terms: dict[str, list[TermOut]] | None = Field(
        None,
        exclude_if=absent,
        description="explain: per sparse retriever that ran, query-term contributions to its "
        "score (absent otherwise)",
    )
    interest: int | None = Field(
        None,
        exclude_if=absent,
        description="diversify: the interest cluster of the document (absent otherwise)",
    )


class MixtureComponentOut(BaseModel):
    """One kept component of a kNN-Embed mixture (``/v1/recommend`` and ``diversify``)."""

    interest: int
    weight: float = Field(description="p(c|u) after smoothing (u: the history or the query)")
    budget: int = Field(description="slots of k given to this interest")


class SearchResponse(BaseModel):
    request_id: str
    collection: str
    pipeline: str
    query: str
    k: int
    offset: int
    hits: list[HitOut]
    timings_ms: dict[str, float]
    took_ms: float
    degraded: bool = Field(description="true when a stage was skipped (see degraded_reasons)")
    degraded_reasons: list[str]
    mixture: list[MixtureComponentOut] | None = Field(
        None,
        exclude_if=absent,
        description="diversify: the mixture used, heaviest first (absent otherwise)",
    )


class SearchBatchResponse(BaseModel):
    request_id: str
    results: list[SearchResponse]


class PipelineOut(BaseModel):
    name: str
    description: str
    retrievers: list[str]
    fusion: str | None
    rerank: bool


class CollectionOut(BaseModel):
    name: str
    doc_count: int
    retrievers: list[str]
    pipelines: list[PipelineOut]
    default_pipeline: str
    built: str | None
    pipeline_config: dict[str, object] = Field(
        description="the manifest's `pipelines` field: tuned fusion and its provenance"
    )


class CollectionsResponse(BaseModel):
    default: str
    collections: list[CollectionOut]
    reranker: str | None


class DocOut(BaseModel):
    collection: str
    doc_id: str
    title: str
    text: str
    metadata: dict[str, object]


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong and what to change")
    code: str
    request_id: str | None = None
    errors: list[dict[str, object]] | None = None
