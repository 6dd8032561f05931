"""``twofold eval`` says when its figures are not what they seem: a pipeline that ran
degraded (here: a real cross-encoder that loads but fails on every input) is marked in
the report with its reason, and a ``--k`` below a metric's cutoff is warned about."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from tests.test_reranker import save_tiny_cross_encoder
from twofold.search.jobs import EvalJob, run_eval


def test_a_degraded_pipeline_is_marked_in_the_report(
    full_collection: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # its tokenizer emits ids past its embedding table: it loads, then fails to score
    broken = save_tiny_cross_encoder(tmp_path / "broken", vocab_size=6)
    out = tmp_path / "results.json"
    job = EvalJob(
        collection=full_collection,
        dataset=SAMPLE,
        pipelines=("bm25", "hybrid+rerank"),
        out=out,
        max_queries=5,
        progress=False,
        reranker=str(broken),
    )
    with caplog.at_level(logging.WARNING):
        report = run_eval(job)
    pipelines = json.loads(out.read_text())["pipelines"]
    assert pipelines["bm25"]["degraded"] == {"queries": 0, "reasons": {}}
    assert pipelines["hybrid+rerank"]["degraded"] == {
        "queries": 5,
        "reasons": {"rerank skipped": 5},
    }
    assert "DEGRADED on 5 of 5 queries: rerank skipped (5)" in report.table()
    assert "pipeline hybrid+rerank ran degraded on 5 queries" in caplog.text
    assert json.loads(out.read_text())["warnings"] == []  # --k 100 measures every metric


def test_k_below_a_metric_cutoff_is_warned_about(
    full_collection: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "results.json"
    job = EvalJob(full_collection, SAMPLE, k=10, out=out, max_queries=3, progress=False)
    with caplog.at_level(logging.WARNING):
        report = run_eval(job)
    (warning,) = json.loads(out.read_text())["warnings"]
    assert warning.startswith("--k 10 is below recall@100's cutoff 100")
    assert f"warning: {warning}" in report.table() and warning in caplog.text
