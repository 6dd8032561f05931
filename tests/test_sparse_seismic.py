"""The seismic engine: top-10 overlap with exact scoring on a synthetic corpus, exact
scores and explanations for its hits, the streaming postings merge, engine selection.

The corpus is ``bench.synthetic`` (splade-tiny-like shapes, fixed seed), written into a
real sparse sub-index directory (shards -> ``write_postings`` -> ``build_seismic``), so
the engines read exactly what a build writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from bench import synthetic
from twofold.core.errors import CollectionError, InputError
from twofold.core.types import SparseVec
from twofold.indexing.sparse.index import (
    FORMAT_VERSION,
    NATIVE_MAX_DOCS,
    SparseIndex,
    default_engine,
    iter_shards,
    shard_path,
    write_doc_ids,
    write_postings,
    write_shard,
    write_vocab,
)
from twofold.indexing.sparse.seismic import SeismicParams, auto_n_postings, build_seismic

N_DOCS, SHARD = 3000, 700  # five shards, a ragged last one


def write_index(out: Path, matrix: sp.csr_matrix, shard: int, params: SeismicParams) -> SparseIndex:
    n_shards = 0
    for n_shards, start in enumerate(range(0, matrix.shape[0], shard), start=1):
        write_shard(shard_path(out, n_shards - 1), matrix[start : start + shard])
    write_postings(out, n_shards, matrix.shape[1])
    write_doc_ids(out, [f"d{i}" for i in range(matrix.shape[0])])
    write_vocab(out, [f"t{j}" for j in range(matrix.shape[1])])
    entry: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": "splade",
        "seismic": build_seismic(out, iter_shards(out, n_shards), matrix.shape[1], params),
    }
    return SparseIndex(out, entry)


@pytest.fixture(scope="module")
def corpus() -> sp.csr_matrix:
    return synthetic.docs(N_DOCS, seed=0)


@pytest.fixture(scope="module")
def index(corpus: sp.csr_matrix, tmp_path_factory: pytest.TempPathFactory) -> SparseIndex:
    # a small n_postings so that Seismic really prunes at 3,000 documents
    return write_index(tmp_path_factory.mktemp("syn"), corpus, SHARD, SeismicParams(n_postings=60))


def test_streaming_merge_equals_scipy(index: SparseIndex, corpus: sp.csr_matrix) -> None:
    csc = corpus.tocsc()
    csc.sort_indices()
    assert np.array_equal(np.asarray(index.native.indptr), csc.indptr)
    assert np.array_equal(np.asarray(index.native.docs), csc.indices)
    assert np.array_equal(np.asarray(index.native.weights), csc.data)
    fwd = np.load(index.path / "forward" / "indptr.npy")
    assert np.array_equal(fwd, corpus.indptr)
    assert np.array_equal(np.load(index.path / "forward" / "terms.npy"), corpus.indices)


@pytest.mark.parametrize("gather", [None, 37])  # the default budget, and one of 37 postings
def test_native_scores_equal_a_term_at_a_time_loop_bitwise(
    index: SparseIndex, corpus: sp.csr_matrix, gather: int | None, monkeypatch: Any
) -> None:
    """The native engine's gathered CSC products give, bit for bit, the float32 sums of
    ``acc[docs] += q_j * w`` term by term (what it computed before), also when the
    postings are gathered in many small groups; out-of-range term ids are skipped; and
    the seismic engine's exact re-scoring (``ForwardIndex.scores``) gives the same bits."""
    from twofold.indexing.sparse import index as sparse_index

    if gather is not None:
        monkeypatch.setattr(sparse_index, "GATHER_POSTINGS", gather)
    native, forward = index.native, index.engine("seismic").forward
    for ids, weights in synthetic.queries(corpus, 30, seed=3):
        ids = np.append(ids, [-1, corpus.shape[1]])  # not in the vocabulary: ignored
        weights = np.append(weights, [1.0, 1.0]).astype(np.float32)
        acc = np.zeros(corpus.shape[0], dtype=np.float32)
        for j, w in zip(ids.tolist(), weights.tolist(), strict=True):
            if 0 <= j < corpus.shape[1]:
                s, e = int(native.indptr[j]), int(native.indptr[j + 1])
                acc[native.docs[s:e]] += np.float32(w) * native.weights[s:e]
        scores = native.scores(ids, weights)
        assert scores.dtype == np.float32 and np.array_equal(scores, acc)
        some = np.flatnonzero(acc)[:50]
        assert np.array_equal(forward.scores(some, ids, weights), acc[some])
    assert not native.scores(np.array([-5]), np.array([1.0])).any()


def test_native_top_k_is_the_best_k_by_score_then_ordinal(
    index: SparseIndex, corpus: sp.csr_matrix
) -> None:
    """``search`` keeps the k best positive scores, best first, ties by doc ordinal; k
    past the number of matching documents returns them all, k <= 0 none."""
    native = index.native
    for ids, weights in synthetic.queries(corpus, 10, seed=4):
        acc = native.scores(ids, weights)
        ranked = sorted(np.flatnonzero(acc > 0).tolist(), key=lambda d: (-acc[d], d))
        for k in (1, 10, N_DOCS + 5):
            hits = native.search(ids, weights, k)
            assert [d for d, _ in hits] == [f"d{d}" for d in ranked[:k]]
            assert [s for _, s in hits] == [float(acc[d]) for d in ranked[:k]]
        assert native.search(ids, weights, 0) == []
    lengths = np.diff(np.asarray(native.indptr))
    rare = int(np.flatnonzero((lengths > 0) & (lengths < 50))[0])  # a term in 1-49 documents
    assert len(native.search(np.array([rare]), np.ones(1), 50)) == lengths[rare]


def test_top10_overlap_and_exact_scores(index: SparseIndex, corpus: sp.csr_matrix) -> None:
    seismic, native = index.engine("seismic"), index.engine("native")
    overlaps = []
    for ids, weights in synthetic.queries(corpus, 100, seed=1):
        exact = native.search(ids, weights, 10)
        pruned = seismic.search(ids, weights, 10)
        overlaps.append(len({d for d, _ in exact} & {d for d, _ in pruned}) / 10)
        scores = dict(exact)
        q = np.zeros(corpus.shape[1], dtype=np.float64)
        q[ids] = weights
        reference = corpus @ q
        for doc_id, score in pruned:  # exact scores: the native engine's, bitwise
            assert score == pytest.approx(reference[int(doc_id[1:])], rel=1e-5)
            if doc_id in scores:
                assert score == scores[doc_id]
    assert np.mean(overlaps) >= 0.98, np.mean(overlaps)


def test_explanations_equal_across_engines(index: SparseIndex, corpus: sp.csr_matrix) -> None:
    from twofold.search.sparse import SparseSearcher

    searchers = {}
    for name in ("native", "seismic"):
        s = SparseSearcher.__new__(SparseSearcher)  # no query encoder: vectors given
        s.index, s.engine = index, index.engine(name)
        searchers[name] = s
    for ids, weights in synthetic.queries(corpus, 5, seed=2):
        vec = SparseVec(tuple(ids.tolist()), tuple(float(w) for w in weights))
        hits = searchers["seismic"].search_vector(vec, 10)
        for doc_id, score in hits:
            parts = {
                n: s.explain_vector(vec, doc_id) for n, s in searchers.items()
            }  # the same contributions whatever engine found the hit
            assert parts["native"] == parts["seismic"]
            assert sum(c.contribution for c in parts["seismic"]) == pytest.approx(score, rel=1e-5)


def test_auto_n_postings_is_recorded(tmp_path: Path, corpus: sp.csr_matrix) -> None:
    # one posting a term per 100 documents, from 1,000 to 4,000 (measured: BENCHMARKS.md)
    assert [auto_n_postings(n) for n in (0, 5_000, 100_000, 250_000, 10**6, 10**7)] == [
        1000,
        1000,
        1000,
        2500,
        4000,
        4000,
    ]
    index = write_index(tmp_path / "auto", corpus[:200], 100, SeismicParams())
    assert SeismicParams().n_postings == 0  # chosen at build time ...
    assert index.entry["seismic"]["n_postings"] == 1000  # ... and recorded as used
    assert index.engine("seismic").params.n_postings == 1000


def test_engine_selection(tmp_path: Path, corpus: sp.csr_matrix) -> None:
    # the measured rule (bench/results/sparse-synthetic.json): native is the fastest up
    # to 1M documents; lucene grows slower, and takes over from NATIVE_MAX_DOCS
    assert default_engine(NATIVE_MAX_DOCS - 1) == "native"
    assert default_engine(NATIVE_MAX_DOCS) == "lucene"
    small = corpus[:50]
    entry: dict[str, Any] = {"format_version": FORMAT_VERSION, "kind": "splade"}
    index = write_index(tmp_path / "s", small, 50, SeismicParams())
    index.use_engine("seismic")
    assert index.engine().name == "seismic"
    with pytest.raises(InputError, match="unknown sparse engine"):
        index.engine("faiss")
    # a sub-index built without the seismic engine says so
    (tmp_path / "s" / "seismic" / "index.index.seismic").unlink()
    with pytest.raises(CollectionError, match="Seismic index"):
        SparseIndex(tmp_path / "s", entry).engine("seismic")
