"""The HTTP API suite of ``test_api`` over both backends: a real ``twofold serve`` per
backend on a collection with bm25 + sparse + splade + dense, embedded (FAISS, native
postings) or Milvus-backed (milvus-lite on loopback). The functions imported below run
here unchanged against each; the tests after them cover what that suite's BM25-only
collection cannot (the learned retrievers, explanations, the collection listing)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import tests.test_api as api
from tests.conftest import BACKEND_DOCS, BACKEND_RETRIEVERS
from tests.test_api import expect, search

# test_api's fixtures and backend-agnostic tests, collected here again for each backend
client = api.client
server = api.server
test_a_failing_reranker_degrades_to_the_fused_ranking = (
    api.test_a_failing_reranker_degrades_to_the_fused_ranking
)
test_ad_hoc_retrievers_with_fusion = api.test_ad_hoc_retrievers_with_fusion
test_bad_or_missing_token = api.test_bad_or_missing_token
test_batch = api.test_batch
test_batch_limits = api.test_batch_limits
test_default_pipeline_and_request_ids_are_made = api.test_default_pipeline_and_request_ids_are_made
test_health_readiness_and_metrics_need_no_key = api.test_health_readiness_and_metrics_need_no_key
test_hybrid_plus_rerank_uses_the_cross_encoder = api.test_hybrid_plus_rerank_uses_the_cross_encoder
test_invalid_search_bodies_are_422 = api.test_invalid_search_bodies_are_422
test_malformed_json_and_wrong_content = api.test_malformed_json_and_wrong_content
test_metrics_count_what_happened = api.test_metrics_count_what_happened
test_oversized_body_is_413 = api.test_oversized_body_is_413
test_rerank_pipeline_without_reranker_says_how_to_add_one = (
    api.test_rerank_pipeline_without_reranker_says_how_to_add_one
)
test_search_returns_hits_with_snippets_and_sources = (
    api.test_search_returns_hits_with_snippets_and_sources
)
test_unknown_doc_and_route = api.test_unknown_doc_and_route
tiny_reranker = api.tiny_reranker


@pytest.fixture(scope="session", params=["embedded", "milvus"])
def sample_collection(request: pytest.FixtureRequest, backend_collections: dict[str, Path]) -> Path:
    """Overrides ``test_api``'s BM25-only collection: the same API, each backend."""
    return backend_collections[str(request.param)]


def test_collection_listing_and_docs(client: httpx.Client) -> None:
    (c,) = client.get("/v1/collections").json()["collections"]
    assert c["doc_count"] == BACKEND_DOCS and sorted(c["retrievers"]) == sorted(BACKEND_RETRIEVERS)
    names = [p["name"] for p in c["pipelines"]]
    assert {"bm25", "sparse", "splade", "dense", "hybrid", "hybrid+rerank"} <= set(names)
    doc = client.get("/v1/docs/1").json()
    assert doc["doc_id"] == "1" and doc["text"]


@pytest.mark.parametrize("pipeline", ["sparse", "splade", "dense", "hybrid"])
def test_learned_retrievers_answer_through_the_api(client: httpx.Client, pipeline: str) -> None:
    data = search(client, query="boundary layer heat transfer", k=5, pipeline=pipeline).json()
    assert data["degraded"] is False, data["degraded_reasons"]
    hits = data["hits"]
    assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    if pipeline != "hybrid":
        assert all(h["sources"][pipeline]["rank"] >= 1 for h in hits)
    else:
        assert set(hits[0]["sources"]) <= set(BACKEND_RETRIEVERS)
        assert f"retrieve.{pipeline}" not in data["timings_ms"]
        assert {"retrieve.sparse", "retrieve.dense", "fuse"} <= set(data["timings_ms"])


def test_explanations_sum_to_the_sparse_score(client: httpx.Client) -> None:
    data = search(client, query="heat transfer", k=3, pipeline="sparse", explain=True).json()
    for hit in data["hits"]:
        terms = hit["terms"]["sparse"]
        assert terms, hit
        assert sum(t["contribution"] for t in terms) == pytest.approx(hit["score"], rel=1e-4)


def test_unknown_names_are_404_and_bad_fusion_weights_400(client: httpx.Client) -> None:
    expect(search(client, query="heat", pipeline="hybird"), 404, "hybird", "known: bm25")
    expect(search(client, query="heat", retrievers=["interests"]), 404, "no retriever")
    stray = {"method": "convex", "weights": {"sparse": 0.3, "nope": 0.7}}
    expect(search(client, query="heat", retrievers=["sparse"], fusion=stray), 400, "'nope'")


def test_milvus_fusion_pipelines_over_http(
    client: httpx.Client, sample_collection: Path, backend_collections: dict[str, Path]
) -> None:
    """``milvus-rrf`` answers on the Milvus-backed collection (one retrieve+fuse stage,
    hits sourced from Milvus's fusion, concurrently from 8 threads alike) and is refused
    on the embedded one, saying what to do."""
    body = {"query": "boundary layer heat transfer", "k": 5, "pipeline": "milvus-rrf"}
    if sample_collection != backend_collections["milvus"]:
        expect(search(client, **body), 400, "fuses in Milvus", "use the hybrid pipeline")
        return
    first = search(client, **body).json()
    assert [h["rank"] for h in first["hits"]] == [1, 2, 3, 4, 5]
    assert all(set(h["sources"]) == {"milvus-rrf"} for h in first["hits"])
    assert "retrieve+fuse" in first["timings_ms"]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: search(client, **body), range(16)))
    assert {a.status_code for a in answers} == {200}
    ids = [h["doc_id"] for h in first["hits"]]
    assert all([h["doc_id"] for h in a.json()["hits"]] == ids for a in answers)
