"""Real-data check: splade-tiny on a fixed Cranfield subset (about 11 s on 2 cores).

Subset (documented so the numbers can be reproduced): the first ``N_QUERIES`` judged
queries of the Cranfield test split in ``queries.jsonl`` order; corpus = the first
``N_DOCS`` documents of ``corpus.jsonl`` plus every document judged for those queries,
in corpus order. Built with ``BuildOptions(retrievers=("sparse", "splade"),
max_length=256)`` (no pruning, scale 100) and scored by ``twofold eval`` on the native
(exact) engine; the tolerance absorbs float summation order, not a change of method.
(The full collection, 1,400 docs and 225 queries, gives sparse 0.3470 / splade 0.3634:
BENCHMARKS.md (learned sparse section).)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_subset
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.search.jobs import EvalJob, run_eval

N_QUERIES, N_DOCS = 50, 150
PINNED = {"sparse": 0.4654, "splade": 0.4764}  # nDCG@10 on the subset, native engine


@pytest.mark.slow
def test_cranfield_subset_ndcg_pinned(cranfield_dir: Path, tmp_path: Path) -> None:
    beir = tmp_path / "cranfield-subset"
    write_subset(cranfield_dir, beir, N_QUERIES, N_DOCS)
    out = tmp_path / "col"
    options = BuildOptions(retrievers=("sparse", "splade"), max_length=256, progress=False)
    manifest = build_collection(beir, out, options)
    assert manifest.sub_indexes["sparse"]["idf"]["source"] == "collection"
    assert "doc_side" in manifest.sub_indexes["splade"]  # reused the sparse encoding
    report = run_eval(EvalJob(out, beir, pipelines=("sparse", "splade"), k=100, progress=False))
    got = {r.name: r.metrics["ndcg@10"] for r in report.results}
    for name, expected in PINNED.items():
        assert got[name] == pytest.approx(expected, abs=0.002), (name, got)
