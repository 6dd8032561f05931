"""The service's configuration: one ``pydantic-settings`` object, validated at start-up.

Every field can come from the environment with the ``TWOFOLD_`` prefix (e.g.
``TWOFOLD_API_KEY``, ``TWOFOLD_RERANKER``, ``TWOFOLD_COLLECTIONS='["build/c"]'``);
``create_app(Settings(collections=[...]))`` needs none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWOFOLD_", frozen=True, extra="forbid")

    collections: list[Path] = Field(
        default_factory=list, description="collection directories to serve (the first is default)"
    )
    default_pipeline: str = Field(
        "hybrid",
        description="pipeline of a request that names none (falls back to the first "
        "available one when the collection cannot run it)",
    )
    api_key: SecretStr | None = Field(
        None, description="when set, /v1/* needs `Authorization: Bearer <key>`"
    )
    admin_key: SecretStr | None = Field(
        None,
        description="when set, admin routes (reload) are on and need `Authorization: Bearer "
        "<admin key>` (the search key does not open them); unset, they are off (404)",
    )
    reranker: str | None = Field(
        None, description="cross-encoder directory (HF *ForSequenceClassification) for +rerank"
    )
    reranker_batch_size: int = Field(16, ge=1, le=512)
    reranker_max_length: int = Field(256, ge=16, le=4096)
    retrieve_depth: int = Field(100, ge=1, le=1000, description="hits per retriever")
    rerank_depth: int = Field(50, ge=1, le=1000, description="fused candidates reranked")
    time_budget_ms: int = Field(
        5000, ge=10, le=600_000, description="per-request budget; the reranker gets 80% of it"
    )
    max_body_bytes: int = Field(256 * 1024, ge=1024, le=64 * 1024 * 1024)
    search_threads: int = Field(4, ge=1, le=64, description="threads running pipelines")
    max_queue: int = Field(
        64,
        ge=0,
        le=100_000,
        description="requests that may wait for a pipeline thread; past it 429 + Retry-After",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch intra-op threads, set once at start (default: torch's, the "
        "number of cores); never switched per request",
    )
    verify: Literal["off", "sizes", "sha256"] = Field(
        "sha256",
        description="check each collection's files against the sizes (and sha256) its "
        "manifest records before serving it; a collection that fails is refused, the "
        "others are served (sha256 reads every file once at load: `sizes` for huge ones)",
    )
    warmup: bool = Field(True, description="run one query per pipeline before reporting ready")
    sparse_engine: Literal["native", "lucene", "seismic"] | None = Field(
        None,
        description="engine of the sparse and splade retrievers (default: the one each "
        "collection was built with, see `twofold index inspect`)",
    )

    @field_validator("collections")
    @classmethod
    def _unique_names(cls, value: list[Path]) -> list[Path]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"collections are addressed by directory name; {dupes} repeat")
        return value
