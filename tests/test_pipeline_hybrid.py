"""``hybrid`` over a collection with several retrievers (BM25 + inference-free sparse +
SPLADE from a tiny random MLM): fusion of all of them, and explain through the API."""

from __future__ import annotations

import httpx
import pytest

from tests.test_api import run_in_thread
from tests.test_sparse_unit import build_tiny_collection
from twofold.app.settings import Settings
from twofold.core.types import Query
from twofold.indexing.collection import Collection
from twofold.search.fusion import FusionConfig
from twofold.search.pipeline import available_pipelines, build_pipeline, describe_pipeline


@pytest.fixture(scope="module")
def three_way(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    root = tmp_path_factory.mktemp("hybrid")
    return build_tiny_collection(root, ("bm25", "sparse", "splade"), with_idf=True)


def test_hybrid_fuses_every_retriever(three_way: Collection) -> None:
    assert available_pipelines(three_way) == [
        "bm25",
        "sparse",
        "splade",
        "hybrid",
        "hybrid-rrf",
    ]
    assert describe_pipeline(three_way, "hybrid")["retrievers"] == ["bm25", "sparse", "splade"]
    query = Query("q", "boundary layer heat transfer")
    hybrid = build_pipeline(three_way, "hybrid")
    assert set(hybrid.retrievers) == {"bm25", "sparse", "splade"}
    out = hybrid.run(query, 5)
    assert out.degraded == () and set(out.timings_ms) >= {"retrieve.sparse", "fuse"}
    singles = {n: build_pipeline(three_way, n).search(query, 100) for n in hybrid.retrievers}
    # untuned: one vote per model family (sparse and splade share the learned-sparse one)
    assert hybrid.fuser == FusionConfig(
        "convex", weights={"bm25": 0.5, "sparse": 0.25, "splade": 0.25}
    )
    expected = hybrid.fuser.fuse("q", singles, 100).top(5)
    assert out.ranking.doc_ids() == expected.doc_ids()
    top = out.ranking.hits[0]
    assert len(top.sources) >= 2  # found by more than one retriever


def test_explain_over_http_lists_sparse_terms(three_way: Collection) -> None:
    with run_in_thread(Settings(collections=[three_way.path], warmup=False)) as base:
        body = {"query": "boundary layer heat transfer", "k": 3, "explain": True}
        data = httpx.post(f"{base}/v1/search", json=body, timeout=30).json()
    assert data["pipeline"] == "hybrid"
    hit = data["hits"][0]
    assert set(hit["terms"]) == {"sparse", "splade"}  # BM25 has no term explainer
    for name, terms in hit["terms"].items():
        if name in hit["sources"]:
            total = sum(t["contribution"] for t in terms)
            assert total == pytest.approx(hit["sources"][name]["score"], rel=1e-3, abs=1e-3)
        for t in terms:
            assert t["contribution"] == pytest.approx(t["query_weight"] * t["doc_weight"])
