"""The Milvus backend against a real Milvus protocol server (``milvus-lite server`` on
127.0.0.1, started by the ``milvus_uri`` fixture): what is written, what is kept
locally, the same rankings as the embedded engines, resuming, and refusals."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from tests.conftest import BACKEND_DOCS
from twofold.core.errors import CollectionError, InputError
from twofold.core.types import Query, Ranking
from twofold.indexing import build
from twofold.indexing.build import PartialBuildKept, build_collection, partial_dir
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.collection import Collection
from twofold.indexing.docstore import DocStore
from twofold.indexing.milvus_index import MilvusDenseIndex, MilvusSparseIndex
from twofold.indexing.milvus_store import MilvusTarget, push_collection, push_to_milvus
from twofold.search.fusion import rrf
from twofold.search.milvus_fusion import MilvusFusion, milvus_retrievers
from twofold.search.pipeline import available_pipelines, build_pipeline, describe_pipeline
from twofold.search.retrievers import RETRIEVERS
from twofold.search.sparse import SparseSearcher

QUERIES = [
    "boundary layer heat transfer",
    "supersonic flow over a flat plate",
    "buckling of thin cylindrical shells",
    "lift and drag of swept wings",
    "what is the effect of viscosity on shock waves",
    "zzzz unknownword",
]


def connect(uri: str) -> MilvusClient:
    """A client of the loopback server; retried, because pymilvus reuses a cached channel
    that milvus-lite may have closed with GOAWAY "too many pings" after a long idle spell
    (seen once on a loaded machine); gRPC reconnects on the next call."""
    for attempt in range(3):
        try:
            return MilvusClient(uri=uri)
        except Exception:
            if attempt == 2:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def test_the_milvus_collection_holds_vectors_and_doc_fields(
    backend_collections: dict[str, Path], milvus_uri: str
) -> None:
    path = backend_collections["milvus"]
    manifest = json.loads((path / "manifest.json").read_text())
    subs = manifest["sub_indexes"]
    assert subs["bm25"].get("backend", "local") == "local"  # BM25 stays on Lucene
    for name in ("sparse", "splade", "dense"):
        assert subs[name]["backend"] == "milvus"
        assert subs[name]["milvus"]["collection"] == "api_cranfield"
    assert subs["splade"]["milvus"]["field"] == "sparse"  # same doc side: one field
    # locally: what the query side needs, not the vectors
    assert (path / "sparse" / "idf.npy").is_file() and (path / "sparse" / "tokenizer").is_dir()
    for gone in ("sparse/postings", "sparse/lucene", "dense/vectors.npy", "splade/postings"):
        assert not (path / gone).exists(), gone
    client = connect(milvus_uri)
    described = client.describe_collection("api_cranfield")
    types = {f["name"]: f["type"] for f in described["fields"]}
    assert types["sparse"] == DataType.SPARSE_FLOAT_VECTOR
    assert types["dense"] == DataType.FLOAT_VECTOR and types["text"] == DataType.VARCHAR
    count = client.query("api_cranfield", filter="", output_fields=["count(*)"])
    assert count[0]["count(*)"] == BACKEND_DOCS
    docs = DocStore(backend_collections["embedded"] / "docs")
    row = client.get("api_cranfield", ids=[7], output_fields=["doc_id", "title", "text", "dense"])
    doc = docs.by_ordinal(7)
    assert (row[0]["doc_id"], row[0]["title"], row[0]["text"]) == (doc.doc_id, doc.title, doc.text)
    stored = np.load(backend_collections["embedded"] / "dense" / "vectors.npy")[7]
    np.testing.assert_allclose(np.asarray(row[0]["dense"]), stored, rtol=0, atol=1e-6)


def assert_same_top(want: Ranking, got: Ranking, k: int, atol: float, tie: float) -> None:
    """The same scores rank by rank, and the same documents with the same scores, ties
    (within ``tie``) at the ``k`` cut aside."""
    assert len(got.hits) == len(want.hits), want.query_id
    np.testing.assert_allclose(
        [h.score for h in got.hits], [h.score for h in want.hits], rtol=1e-5, atol=atol
    )
    cut = want.hits[-1].score + tie if len(want.hits) == k else -np.inf
    sw = {h.doc_id: h.score for h in want.hits if h.score > cut}
    sg = {h.doc_id: h.score for h in got.hits if h.score > cut}
    assert set(sg) == set(sw), want.query_id
    np.testing.assert_allclose([sg[d] for d in sw], list(sw.values()), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("retriever", ["sparse", "splade", "dense"])
def test_milvus_rankings_equal_the_embedded_ones(
    backend_collections: dict[str, Path], retriever: str
) -> None:
    embedded = RETRIEVERS.get(retriever)(Collection(backend_collections["embedded"]))
    remote = RETRIEVERS.get(retriever)(Collection(backend_collections["milvus"]))
    for text in QUERIES:
        q = Query(text, text)  # the query id names the query in a failure
        assert_same_top(embedded.retrieve(q, 20), remote.retrieve(q, 20), 20, 1e-5, 1e-3)


def test_hybrid_pipeline_and_explanations_on_milvus(backend_collections: dict[str, Path]) -> None:
    embedded = Collection(backend_collections["embedded"])
    remote = Collection(backend_collections["milvus"])
    assert isinstance(remote.index("sparse"), MilvusSparseIndex)
    assert isinstance(remote.index("dense"), MilvusDenseIndex)
    q = Query("q", QUERIES[0])
    top_a = build_pipeline(embedded, "hybrid").search(q, 10)
    top_b = build_pipeline(remote, "hybrid").search(q, 10)
    assert [h.doc_id for h in top_b.hits][:5] == [h.doc_id for h in top_a.hits][:5]
    searcher = SparseSearcher(remote.index("sparse"))
    hit = top_b.hits[0]
    terms = searcher.explain(QUERIES[0], hit.doc_id)
    local = SparseSearcher(embedded.index("sparse")).explain(QUERIES[0], hit.doc_id)
    assert [t.term for t in terms] == [t.term for t in local] and terms
    assert sum(t.contribution for t in terms) == pytest.approx(
        sum(t.contribution for t in local), rel=1e-5
    )


def test_milvus_rrf_fuses_as_twofolds_own_rrf(backend_collections: dict[str, Path]) -> None:
    """``milvus-rrf`` (one ``hybrid_search``, RRFRanker k=60) gives the fused list that
    Twofold's ``rrf`` makes from the same three retrievers' top 100 (every document of
    the 100-doc collection that a retriever scores): the same documents, the same
    scores (ties at the cut aside)."""
    remote = Collection(backend_collections["milvus"])
    assert milvus_retrievers(remote) == ["sparse", "splade", "dense"]
    pipeline = build_pipeline(remote, "milvus-rrf")
    assert list(pipeline.retrievers) == ["sparse", "splade", "dense"]
    retrievers = {n: RETRIEVERS.get(n)(remote) for n in pipeline.retrievers}
    for text in QUERIES:
        q = Query(text, text)
        got = pipeline.search(q, 20)
        want = rrf(text, {n: r.retrieve(q, 100) for n, r in retrievers.items()}, 20)
        assert_same_top(want, got, 20, 1e-7, 1e-6)
        assert all(set(h.sources) == {"milvus-rrf"} for h in got.hits)
    # the sparse query vectors it sent are kept, so explanations work as on any pipeline
    outcome = pipeline.run(Query("q", QUERIES[0]), 5)
    assert set(outcome.encoded) == {"sparse", "splade"}
    for name, vector in outcome.encoded.items():
        assert vector == retrievers[name].encode_query(Query("q", QUERIES[0]))
        assert retrievers[name].explain(vector, outcome.ranking.hits[0].doc_id)


def test_milvus_weighted_and_where_milvus_fusion_is_offered(
    backend_collections: dict[str, Path],
) -> None:
    remote = Collection(backend_collections["milvus"])
    embedded = Collection(backend_collections["embedded"])
    weighted = build_pipeline(remote, "milvus-weighted")
    assert isinstance(weighted.fuser, MilvusFusion)
    assert dict(weighted.fuser.weights) == {"sparse": 0.25, "splade": 0.25, "dense": 0.5}
    top = weighted.search(Query("q", QUERIES[0]), 10)
    assert len(top.hits) == 10
    assert [h.score for h in top.hits] == sorted((h.score for h in top.hits), reverse=True)
    assert weighted.search(Query("q", "   "), 10).hits == ()
    assert {"milvus-rrf", "milvus-weighted"} <= set(available_pipelines(remote))
    assert not {"milvus-rrf", "milvus-weighted"} & set(available_pipelines(embedded))
    with pytest.raises(InputError, match=r"fuses in Milvus.*--backend milvus"):
        build_pipeline(embedded, "milvus-rrf")
    assert describe_pipeline(remote, "milvus-rrf")["fusion"] == (
        "Milvus hybrid_search, RRFRanker k=60"
    )


def test_milvus_fusion_is_not_offered_over_a_two_sided_adapter(
    backend_collections: dict[str, Path], tmp_path: Path
) -> None:
    """A ``both`` adapter maps the stored document vectors, which Milvus holds unmapped:
    the Milvus pipelines are not offered there (a service warming every pipeline up
    would fail on them), and asking for one says why."""
    copy = tmp_path / "cranfield"
    shutil.copytree(backend_collections["milvus"], copy)
    (copy / "adapter").mkdir()
    (copy / "adapter" / "adapter.json").write_text(json.dumps({"variant": "both"}))
    collection = Collection(copy)
    assert "hybrid" in available_pipelines(collection)
    assert not {"milvus-rrf", "milvus-weighted"} & set(available_pipelines(collection))
    with pytest.raises(InputError, match="variant 'both'"):
        build_pipeline(collection, "milvus-weighted")


def test_other_sparse_engines_are_refused_with_the_reason(
    backend_collections: dict[str, Path],
) -> None:
    index = Collection(backend_collections["milvus"]).index("sparse")
    with pytest.raises(InputError, match="served by Milvus"):
        index.use_engine("lucene")


class FailingDocs:
    """A doc store whose reads fail from ordinal ``fail_at`` on: a crash mid-write."""

    def __init__(self, docs: DocStore, fail_at: int) -> None:
        self.docs, self.fail_at = docs, fail_at

    def __len__(self) -> int:
        return len(self.docs)

    def by_ordinal(self, i: int) -> Any:
        if i >= self.fail_at:
            raise OSError("disk went away")
        return self.docs.by_ordinal(i)


def test_an_interrupted_write_resumes_after_the_last_batch(
    tiny_corpus: Path, tmp_path: Path, milvus_uri: str
) -> None:
    out = tmp_path / "tiny"
    build_collection(tiny_corpus, out, BuildOptions(retrievers=("sparse",), progress=False))
    manifest = json.loads((out / "manifest.json").read_text())
    target = MilvusTarget(milvus_uri, "resume_tiny", batch_size=2)
    docs = DocStore(out / "docs")
    with pytest.raises(CollectionError, match="disk went away; rerun"):
        push_to_milvus(out, manifest["sub_indexes"], FailingDocs(docs, 3), target, out, False)  # type: ignore[arg-type]
    state = json.loads((out / "milvus.json").read_text())
    assert state["done"] == 2  # the first batch is in, the second failed
    entries = push_to_milvus(out, manifest["sub_indexes"], docs, target, out, False)
    assert entries["sparse"]["backend"] == "milvus"
    client = connect(milvus_uri)
    assert client.query("resume_tiny", filter="", output_fields=["count(*)"])[0]["count(*)"] == 5
    ids = sorted(r["id"] for r in client.query("resume_tiny", filter="", output_fields=["id"]))
    assert ids == [0, 1, 2, 3, 4]  # upserts: no duplicates from the retried batch


def test_a_foreign_milvus_collection_is_never_dropped(
    tiny_corpus: Path, tmp_path: Path, milvus_uri: str
) -> None:
    client = connect(milvus_uri)
    client.create_collection("someone_elses", dimension=4)
    out = tmp_path / "tiny"
    target = MilvusTarget(milvus_uri, "someone_elses")
    options = BuildOptions(retrievers=("sparse",), progress=False)
    with pytest.raises(InputError, match="was not written by Twofold"):
        build_collection(tiny_corpus, out, options, target)
    assert not out.exists()
    assert not partial_dir(out).exists()  # refused before anything was encoded
    assert client.has_collection("someone_elses")


def test_a_collection_taken_during_the_build_keeps_the_partial_build(
    tiny_corpus: Path, tmp_path: Path, milvus_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client creates the target collection after the early check (a race):
    the push refuses it, the finished sub-index is kept, and the rerun with another
    --milvus-collection resumes without encoding again."""
    client = connect(milvus_uri)
    checked = build.check_milvus_target

    def check_then_race(target: MilvusTarget, retrievers: list[str], out: Path) -> None:
        checked(target, retrievers, out)
        client.create_collection(target.name_for(out), dimension=4)

    monkeypatch.setattr(build, "check_milvus_target", check_then_race)
    out = tmp_path / "raced"
    options = BuildOptions(retrievers=("bm25", "sparse"), progress=False)
    with pytest.raises(PartialBuildKept, match="was not written by Twofold") as caught:
        build_collection(tiny_corpus, out, options, MilvusTarget(milvus_uri, "raced_tiny"))
    assert caught.value.kept == ["doc store", "bm25", "sparse"]
    assert "choose another --milvus-collection" in str(caught.value)
    assert not out.exists() and client.has_collection("raced_tiny")
    finished = json.loads((partial_dir(out) / "sparse" / ".complete.json").read_text())

    monkeypatch.setattr(build, "check_milvus_target", checked)
    manifest = build_collection(tiny_corpus, out, options, MilvusTarget(milvus_uri, "raced_ok"))
    assert manifest.sub_indexes["sparse"]["build_seconds"] == finished["build_seconds"]  # reused
    assert manifest.sub_indexes["sparse"]["milvus"]["collection"] == "raced_ok"
    assert client.query("raced_ok", filter="", output_fields=["count(*)"])[0]["count(*)"] == 5
    assert client.has_collection("raced_tiny")  # the other client's collection is untouched


def test_bad_targets_fail_before_anything_is_built(tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a Milvus server address"):
        MilvusTarget("localhost")
    with pytest.raises(InputError, match="--milvus-collection"):
        MilvusTarget("http://127.0.0.1:1", "bad-name")
    out = tmp_path / "x"
    options = BuildOptions(retrievers=("bm25",), progress=False)
    with pytest.raises(InputError, match="needs at least one of sparse, splade, dense"):
        build_collection(tiny_corpus, out, options, MilvusTarget("http://127.0.0.1:1"))
    assert not out.exists()


def test_a_pushed_collection_is_not_pushed_twice(
    backend_collections: dict[str, Path], milvus_uri: str, tmp_path: Path
) -> None:
    copy = tmp_path / "again"
    shutil.copytree(backend_collections["milvus"], copy)
    with pytest.raises(InputError, match="already served by Milvus"):
        push_collection(copy, MilvusTarget(milvus_uri, "api_cranfield"))


def test_the_serving_uri_can_be_overridden(
    backend_collections: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWOFOLD_MILVUS_URI", "http://127.0.0.1:9")  # nothing listens
    with pytest.raises(CollectionError, match=r"127\.0\.0\.1:9"):
        Collection(backend_collections["milvus"]).index("dense")
