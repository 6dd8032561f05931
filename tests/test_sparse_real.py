"""Real-data check: splade-tiny on the full Cranfield collection (1,400 docs, 225 queries).

Pinned values were measured with ``twofold eval`` on the native (exact) engine, max_length
256; the tolerance absorbs float summation order, not a change of method.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.search.jobs import EvalJob, run_eval

PINNED = {"sparse": 0.3470, "splade": 0.3634}  # nDCG@10, Cranfield test, native engine


@pytest.mark.slow
def test_cranfield_ndcg_pinned(cranfield_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cranfield"
    options = BuildOptions(retrievers=("sparse", "splade"), max_length=256, progress=False)
    manifest = build_collection(cranfield_dir, out, options)
    assert manifest.sub_indexes["sparse"]["idf"]["source"] == "collection"
    report = run_eval(
        EvalJob(out, cranfield_dir, pipelines=("sparse", "splade"), k=100, progress=False)
    )
    got = {r.name: r.metrics["ndcg@10"] for r in report.results}
    for name, expected in PINNED.items():
        assert got[name] == pytest.approx(expected, abs=0.002), (name, got)
