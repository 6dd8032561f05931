"""Interest clusters (indexing.dense.interests) and kNN-Embed retrieval (search.interests) on
synthetic clustered vectors: no encoder needed, checked against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twofold.core.errors import CollectionError, InputError, NotFoundError
from twofold.core.types import Doc, Hit, Ranking
from twofold.indexing.dense.interests import (
    InterestIndex,
    default_n_clusters,
    open_index,
    read_dense_vectors,
    write_interests,
)
from twofold.indexing.docstore import DocStore, DocStoreWriter
from twofold.models.knn_embed import MixtureParams, normalize_rows
from twofold.search.interests import InterestRetriever, merge_components

DIM, PER, TOPICS = 16, 30, 4


def clustered_vectors(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.eye(DIM, dtype=np.float32)[:TOPICS] * 3
    x = np.concatenate([c + rng.normal(0, 0.3, (PER, DIM)) for c in centers])
    return normalize_rows(x)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, np.ndarray]:
    root = tmp_path_factory.mktemp("interests")
    vectors = clustered_vectors()
    with DocStoreWriter(root / "docs") as writer:
        for i in range(len(vectors)):
            writer.add(Doc(f"doc{i}", f"title {i}", f"text {i}"))
    entry = write_interests(vectors, root / "interests", n_clusters=TOPICS, seed=1)
    return root, entry, vectors


@pytest.fixture(scope="module")
def retriever(built: tuple[Path, dict, np.ndarray]) -> InterestRetriever:
    root, entry, _ = built
    return InterestRetriever(open_index(root / "interests", entry), DocStore(root / "docs"))


def topic_of(ordinal: int) -> int:
    return ordinal // PER


def test_default_cluster_count() -> None:
    assert default_n_clusters(1400) == 37
    assert default_n_clusters(5183) == 72
    assert default_n_clusters(1) == 1


def test_clusters_recover_the_topics(built: tuple[Path, dict, np.ndarray]) -> None:
    root, entry, vectors = built
    index = InterestIndex(root / "interests", entry)
    assert entry["n_clusters"] == TOPICS and entry["cluster_size"]["empty"] == 0
    assert np.allclose(np.linalg.norm(index.centroids, axis=1), 1.0, atol=1e-5)
    # each topic lands in one cluster, each cluster holds one topic
    for t in range(TOPICS):
        assert len(set(index.assignments[t * PER : (t + 1) * PER].tolist())) == 1
    assert len(set(index.assignments.tolist())) == TOPICS
    # assignments = nearest centroid by cosine; stored vectors come back unchanged
    assert (index.assignments == np.argmax(vectors @ index.centroids.T, axis=1)).all()
    assert np.allclose(index.vectors([0, 45, 119]), vectors[[0, 45, 119]])


def test_search_within_cluster_matches_brute_force(
    built: tuple[Path, dict, np.ndarray],
) -> None:
    root, entry, vectors = built
    index = InterestIndex(root / "interests", entry)
    query = normalize_rows(vectors[:2].mean(axis=0, keepdims=True))
    for cluster in range(TOPICS):
        scores, ids = index.search_in_clusters(query, [cluster], 5)
        members = np.flatnonzero(index.assignments == cluster)
        expected = members[np.argsort(-(vectors[members] @ query[0]), kind="stable")][:5]
        assert ids[0].tolist() == expected.tolist()
        assert np.allclose(scores[0], vectors[expected] @ query[0], atol=1e-5)
    _, ids = index.search_all(query, 10)
    assert ids[0].tolist() == np.argsort(-(vectors @ query[0]), kind="stable")[:10].tolist()


def test_open_refuses_another_format_version(built: tuple[Path, dict, np.ndarray]) -> None:
    root, entry, _ = built
    with pytest.raises(CollectionError, match="format_version"):
        InterestIndex(root / "interests", {**entry, "format_version": 99})


def test_read_dense_vectors(tmp_path: Path) -> None:
    x = clustered_vectors()[:5]
    np.save(tmp_path / "vectors.npy", x)
    assert np.array_equal(read_dense_vectors(tmp_path), x)
    with pytest.raises(CollectionError, match=r"no vectors\.npy"):
        read_dense_vectors(tmp_path / "nothing")


def test_merge_deduplicates_and_respects_budgets() -> None:
    a = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]
    b = [(2, 0.95), (5, 0.5), (1, 0.4), (6, 0.3)]
    merged = merge_components([a, b], [2, 2], exclude={3})
    ordinals = [o for o, _, _ in merged]
    assert len(ordinals) == len(set(ordinals)) == 4
    # a takes 1 first; b's 2 is taken next (b's turn), then a skips 2 and 3 -> 4; b takes 5
    assert merged == [(1, 0.9, 0), (2, 0.95, 1), (4, 0.6, 0), (5, 0.5, 1)]
    by_score = merge_components([a, b], [2, 2], order="score", exclude={3})
    assert [o for o, _, _ in by_score] == [2, 1, 4, 5]


def test_merge_proportional_prefixes() -> None:
    lists = [[(i, 1.0) for i in range(10)], [(i, 1.0) for i in range(100, 110)]]
    merged = merge_components(lists, [6, 3])
    comps = [c for _, _, c in merged]
    # (taken + 1) / budget, ties to the heavier: every 3-prefix holds two of 0, one of 1
    assert comps == [0, 0, 1, 0, 0, 1, 0, 0, 1]


def test_recommend_covers_each_interest_and_drops_history(
    retriever: InterestRetriever,
) -> None:
    history = ["doc0", "doc1", "doc2", "doc61", "doc62"]  # topics 0 (3 items) and 2 (2)
    rec = retriever.recommend(history, k=10, params=MixtureParams(neighbour_weight=0.0))
    ids = rec.doc_ids()
    assert len(ids) == len(set(ids)) == 10
    assert not set(ids) & set(history)
    assert rec.mixture is not None
    assert [(c.budget) for c in rec.mixture.components] == [6, 4]
    topics = [topic_of(h.ordinal) for h in rec.hits]
    assert topics.count(0) == 6 and topics.count(2) == 4
    # each hit's interest is the cluster it sits in
    for h in rec.hits:
        assert retriever.index.assignments[h.ordinal] == h.interest and not h.filled
    single = retriever.recommend(history, k=10, method="single_vector")
    assert not set(single.doc_ids()) & set(history)
    assert len(set(single.doc_ids())) == 10


def test_recommend_fills_slots_a_small_cluster_leaves(retriever: InterestRetriever) -> None:
    history = [f"doc{i}" for i in range(25)]  # topic 0: 30 docs, 25 in the history
    rec = retriever.recommend(history, k=12, params=MixtureParams(neighbour_weight=0.0))
    assert len(rec.hits) == 12 and len(set(rec.doc_ids())) == 12
    assert sum(not h.filled for h in rec.hits) == 5
    assert rec.info["filled"] == 7
    assert not set(rec.doc_ids()) & set(history)


def test_unknown_history_ids_are_named(retriever: InterestRetriever) -> None:
    with pytest.raises(NotFoundError) as err:
        retriever.recommend(["doc1", "nope-1", "doc2", "nope-2"], k=5)
    assert "'nope-1'" in str(err.value) and "'nope-2'" in str(err.value)
    assert "'doc1'" not in str(err.value)


def test_bad_requests_are_input_errors(retriever: InterestRetriever) -> None:
    with pytest.raises(InputError, match="empty"):
        retriever.recommend([], k=5)
    with pytest.raises(InputError, match="k must be"):
        retriever.recommend(["doc1"], k=0)
    with pytest.raises(InputError, match="uniform_weight"):
        retriever.recommend(["doc1"], k=5, params=MixtureParams(uniform_weight=2.0))
    with pytest.raises(InputError, match="encoder"):
        retriever.recommend([], k=5, texts=["free text"])


def test_diversify_spreads_a_query_neighbourhood(retriever: InterestRetriever) -> None:
    vectors = clustered_vectors()
    # a query between topics 1 and 3, closer to 1
    q = normalize_rows(
        0.6 * vectors[30:60].mean(0, keepdims=True) + 0.4 * vectors[90:120].mean(0, keepdims=True)
    )
    params = MixtureParams(temperature=0.5, neighbour_weight=0.0, uniform_weight=0.0)
    rec = retriever.diversify(q[0], k=10, params=params, neighbourhood=20)
    topics = {topic_of(h.ordinal) for h in rec.hits}
    assert {1, 3} <= topics
    assert len(set(rec.doc_ids())) == 10


def test_diversify_ranking_reallocates_a_pipeline_list(retriever: InterestRetriever) -> None:
    # a ranking of 15 topic-0 docs, then 5 topic-1 docs: k=8 over a 3:1 mixture
    ids = [f"doc{i}" for i in range(15)] + [f"doc{30 + i}" for i in range(5)]
    ranking = Ranking(
        "q", tuple(Hit(d, 20.0 - r, {"bm25": (r + 1, 20.0 - r)}) for r, d in enumerate(ids))
    )
    params = MixtureParams(temperature=0.0, neighbour_weight=0.0)
    out = retriever.diversify_ranking(ranking, 8, params, neighbourhood=20)
    got = out.ranking.doc_ids()
    # budgets 6:2, interleaved in proportion; each cluster in the ranking's order
    assert got == ["doc0", "doc1", "doc2", "doc30", "doc3", "doc4", "doc5", "doc31"]
    assert out.ranking.hits[3].sources == {"bm25": (16, 5.0)}  # hits keep their sources
    assert len(out.interests) == 8 and out.mixture is not None
    assert [c.budget for c in out.mixture.components] == [6, 2]
    # a cluster with too few candidates: its slots go to the best remaining hits
    short = Ranking("q", ranking.hits[:16])  # one topic-1 doc only
    out = retriever.diversify_ranking(short, 16, params, neighbourhood=16)
    assert sorted(out.ranking.doc_ids()) == sorted(h.doc_id for h in short.hits)


def test_interests_need_the_dense_sub_index() -> None:
    from twofold.indexing.build import ordered_retrievers

    with pytest.raises(InputError, match="'dense'"):
        ordered_retrievers(("interests",))
    assert ordered_retrievers(("interests", "dense")) == ["dense", "interests"]


@settings(max_examples=200, deadline=None)
@given(
    lists=st.lists(
        st.lists(st.tuples(st.integers(0, 30), st.floats(-1, 1)), max_size=15), max_size=5
    ),
    data=st.data(),
)
def test_merge_property_no_duplicates_and_budgets_hold(
    lists: list[list[tuple[int, float]]], data: st.DataObject
) -> None:
    budgets = [data.draw(st.integers(0, 10)) for _ in lists]
    exclude = set(data.draw(st.lists(st.integers(0, 30), max_size=5)))
    merged = merge_components(lists, budgets, exclude=exclude)
    ordinals = [o for o, _, _ in merged]
    assert len(ordinals) == len(set(ordinals)) and not set(ordinals) & exclude
    for i, budget in enumerate(budgets):
        taken = [o for o, _, c in merged if c == i]
        assert len(taken) <= budget
        assert all(o in {p for p, _ in lists[i]} for o in taken)
        # a component stops short of its budget only when its list ran out
        if len(taken) < budget:
            assert {p for p, _ in lists[i]} <= set(ordinals) | exclude


def test_evaluate_interests_on_synthetic_topics(retriever: InterestRetriever) -> None:
    from twofold.search.interests_eval import evaluate_interests

    qrels = {f"t{t}": {f"doc{t * PER + i}": 1 for i in range(PER)} for t in range(TOPICS)}
    result = evaluate_interests(
        retriever, qrels, users=20, seeds=[0, 1], budgets=[8], params=MixtureParams()
    )
    assert result["users"] == 40 and result["qualifying_queries"] == TOPICS
    knn, single = result["methods"]["knn_embed"], result["methods"]["single_vector"]
    assert set(knn) == {"recall@8", "coverage@8", "ild@8"}
    # every interest gets slots in proportion, so each topic is covered
    assert knn["coverage@8"] == 1.0
    assert 0.0 < single["recall@8"] <= 1.0 and 0.0 < knn["ild@8"] <= 2.0
