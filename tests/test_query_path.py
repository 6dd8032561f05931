"""What a query costs on a real collection (every retriever, real models): a retriever
whose tuned fusion weight is 0 is never called, and a request that explains its hits
encodes the query once per retriever, not once per hit.

The counts come from ``Spy``: a real object (retriever, query encoder, engine, dense
index) whose method calls are counted and passed on unchanged; nothing is replaced."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_api import run_in_thread
from twofold.app.metrics import Metrics
from twofold.app.settings import Settings
from twofold.app.state import AppState, load_state
from twofold.core.types import Query
from twofold.indexing.collection import Collection
from twofold.search.fusion import FusionConfig
from twofold.search.pipeline import build_pipeline, collection_retrievers
from twofold.search.retrievers import RETRIEVERS, Explainer
from twofold.search.sparse import SparseSearcher
from twofold.search.tune import write_tuned_fusion

QUERY = "boundary layer heat transfer on a flat plate"
ZERO = {"bm25": 0.4, "sparse": 0.3, "splade": 0.0, "dense": 0.3}


class Spy:
    """``inner`` with every method call counted by name (``calls``), then passed on."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attr(*args, **kwargs)

        return counted


@pytest.fixture(scope="module")
def zero_weight(full_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the full collection whose tuned ``hybrid`` gives ``splade`` weight 0."""
    path = tmp_path_factory.mktemp("zero") / "cranfield-all"
    shutil.copytree(full_collection, path)
    names = collection_retrievers(Collection(path))
    assert sorted(names) == sorted(ZERO)
    write_tuned_fusion(path, names, FusionConfig("convex", weights=ZERO), {"by": "this test"})
    return path


def test_a_zero_weight_retriever_is_never_called(zero_weight: Path) -> None:
    collection = Collection(zero_weight)
    spies = {n: Spy(RETRIEVERS.get(n)(collection)) for n in collection_retrievers(collection)}
    pipeline = build_pipeline(collection, "hybrid", opened=spies)
    assert pipeline.fuser == FusionConfig("convex", weights=ZERO)  # the tuned one
    outcome = pipeline.run(Query("q", QUERY), 10)
    assert spies["splade"].calls == []
    assert spies["sparse"].calls == ["encode_query", "retrieve_encoded"]
    assert spies["bm25"].calls == spies["dense"].calls == ["retrieve"]
    assert "retrieve.splade" not in outcome.timings_ms and "splade" not in outcome.encoded
    assert not any("splade" in hit.sources for hit in outcome.ranking.hits)
    # the same ranking as fusing the three that count, each searched on its own
    lists = {n: RETRIEVERS.get(n)(collection).retrieve(Query("q", QUERY), 100) for n in ZERO}
    del lists["splade"]
    assert outcome.ranking == pipeline.fuser.fuse("q", lists, 100).top(10)


Wrap = Callable[[str, Any], None]


def spying_loader(wrap: Wrap) -> Callable[[Settings, Metrics], AppState]:
    """``load_state`` (warm-up included), then ``wrap(name, retriever)`` for every opened
    retriever: from then on the service's own objects count their calls."""

    def load(settings: Settings, metrics: Metrics) -> AppState:
        state = load_state(settings, metrics)
        for cs in state.collections.values():
            for name, retriever in cs.retrievers.items():
                wrap(name, retriever)
        return state

    return load


def spy_encoders(spies: dict[str, Spy]) -> Wrap:
    """Spy on each retriever's query encoding: the sparse ones' encoder and engine, the
    dense one's index (its ``encode_queries``)."""

    def wrap(name: str, retriever: Any) -> None:
        if isinstance(retriever, Explainer):
            searcher = retriever.searcher
            spies[name] = searcher.encoder = Spy(searcher.encoder)
            spies[f"{name}.engine"] = searcher.engine = Spy(searcher.engine)
        elif name == "dense":
            spies[name] = retriever.index = Spy(retriever.index)

    return wrap


def test_explain_encodes_the_query_once_per_retriever(full_collection: Path) -> None:
    spies: dict[str, Spy] = {}
    settings = Settings(collections=[full_collection], verify="sizes")
    with run_in_thread(settings, spying_loader(spy_encoders(spies))) as base:
        body = {"query": QUERY, "k": 10, "explain": True, "pipeline": "hybrid"}
        resp = httpx.post(f"{base}/v1/search", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    hits = resp.json()["hits"]
    assert len(hits) == 10
    assert spies["sparse"].calls == ["encode_query"]  # 1, not 1 + 10
    assert spies["splade"].calls == ["encode_query"]
    assert spies["sparse.engine"].calls == spies["splade.engine"].calls == ["search"]
    assert spies["dense"].calls.count("encode_queries") == 1
    # the explanations are those of the per-hit path (encode, then explain each hit)
    collection = Collection(full_collection)
    for name in ("sparse", "splade"):
        searcher = SparseSearcher(collection.index(name))
        for hit in hits:
            want = [(c.term, c.contribution) for c in searcher.explain(QUERY, hit["doc_id"])]
            got = [(t["term"], t["contribution"]) for t in hit["terms"][name]]
            assert [t for t, _ in got] == [t for t, _ in want]
            assert [c for _, c in got] == pytest.approx([c for _, c in want], rel=1e-5)
            if name in hit["sources"]:
                total = sum(c for _, c in got)
                assert total == pytest.approx(hit["sources"][name]["score"], rel=1e-4)


def test_a_zero_weight_retriever_is_not_run_by_the_service(zero_weight: Path) -> None:
    spies: dict[str, Spy] = {}
    settings = Settings(collections=[zero_weight], verify="sizes")
    with run_in_thread(settings, spying_loader(spy_encoders(spies))) as base:
        body = {"query": QUERY, "k": 10, "explain": True}  # the default pipeline: hybrid
        resp = httpx.post(f"{base}/v1/search", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["pipeline"] == "hybrid" and "retrieve.splade" not in data["timings_ms"]
    assert spies["splade"].calls == [] and spies["splade.engine"].calls == []
    assert spies["sparse"].calls == ["encode_query"]
    # only retrievers that ran are explained
    assert all(set(h["terms"]) == {"sparse"} for h in data["hits"])
