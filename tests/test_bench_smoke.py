"""``make bench-smoke``: the synthetic sparse benchmark end to end on 1,000 documents
(native + seismic; Lucene is left to ``make bench``), and its BENCHMARKS.md section
rendered from the result file. Asserts shapes and exactness, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sparse-synthetic-smoke.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_sparse_synthetic.py"), "--smoke"]
    subprocess.run([*cmd, "--engines", "seismic", "--out", str(out)], check=True, cwd=ROOT)
    report = json.loads(out.read_text())
    assert {"command", "date", "machine"} <= set(report)
    (row,) = report["results"]
    assert row["docs"] == 1000
    assert row["native"]["top10_overlap"] == 1.0  # exact against itself
    assert 0.0 <= row["seismic"]["top10_overlap"] <= 1.0
    for engine in ("native", "seismic"):
        assert row[engine]["disk_bytes"] > 0 and row[engine]["peak_rss_bytes"] > 0

    from bench.report import render, sparse_synthetic

    table = sparse_synthetic([report])
    assert "| 1,000 | seismic |" in table and report["command"] in table
    doc = "a\n<!-- generated:sparse-synthetic -->\nold\n<!-- /generated -->\nb\n"
    assert "old" not in render(doc) and render(doc).startswith("a\n")


def _run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], check=True, cwd=ROOT)


def test_peers_pruning_and_plots_smoke(full_collection: Path, tmp_path: Path) -> None:
    """bench_peers, bench_pruning and plots on the 100-document sample collection: every
    peer runs, peers over the same index agree with Twofold, and the plots are drawn."""
    sample = str(ROOT / "data" / "cranfield")
    results = tmp_path / "results"
    peers_file, pruning_file = results / "peers-sample.json", results / "pruning-sample.json"
    common = ["--dataset", sample, "--max-queries", "20"]
    _run("bench_peers.py", str(full_collection), *common, "--rounds", "1", "--out", str(peers_file))
    _run("bench_pruning.py", str(full_collection), *common, "--out", str(pruning_file))
    peers = json.loads(peers_file.read_text())
    assert {"command", "date", "machine"} <= set(peers)
    comps = peers["comparisons"]
    assert set(comps) == {"bm25", "sparse", "splade", "dense"}
    for comp in comps.values():
        base = comp["systems"][comp["baseline"]]
        assert base["overlap@10"] == 1.0 and base["ratio_p50"] == 1.0
    bm25, sparse, dense = comps["bm25"]["systems"], comps["sparse"]["systems"], comps["dense"]
    # the same Lucene index under the same BM25: Pyserini returns Twofold's ranking
    assert bm25["pyserini LuceneSearcher"]["overlap@10"] == 1.0
    assert "bm25s" in bm25
    # the same impact index and quantized queries: Pyserini returns Twofold's lucene engine's
    assert sparse["pyserini LuceneImpactSearcher"]["ndcg@10"] == sparse["twofold lucene"]["ndcg@10"]
    assert dense["systems"]["faiss IndexFlatIP"]["overlap@10"] == 1.0  # flat is exact

    pruning = json.loads(pruning_file.read_text())
    for check in (r["native_check"] for r in pruning["retrievers"].values()):
        assert check["difference"] == 0.0 and check["top10_overlap"] == 1.0

    plots = tmp_path / "plots"
    _run("plots.py", "--results", str(results), "--out", str(plots))
    png = plots / "ndcg-vs-postings.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from bench.report import peers as peers_table

    assert "pyserini LuceneImpactSearcher" in peers_table([peers]) and peers["command"] in (
        peers_table([peers])
    )


def test_gpu_script_parses_and_refuses_without_a_gpu(tmp_path: Path) -> None:
    """bench/gpu.sh is valid bash; on a machine with no CUDA GPU it stops with status 2
    and a line that says why, and writes no result file."""
    import torch

    script = ROOT / "bench" / "gpu.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if torch.cuda.is_available():
        return  # a GPU machine runs the script itself; nothing to refuse here
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "w")}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


def test_precision_smoke(full_collection: Path, tmp_path: Path) -> None:
    """bench_precision on the sample collection: both precisions timed, the agreement
    figures in range, the three document/query settings evaluated (the copy in the other
    precision built in ``--work``, the collection left alone), and the section rendered."""
    sample = str(ROOT / "data" / "cranfield")
    out, work = tmp_path / "precision-sample.json", tmp_path / "work"
    before = (full_collection / "manifest.json").read_bytes()
    args = ["--dataset", sample, "--work", str(work), "--docs", "16", "--queries", "8"]
    args += ["--eval-queries", "30"]
    _run("bench_precision.py", str(full_collection), *args, "--rounds", "2", "--out", str(out))
    report = json.loads(out.read_text())
    assert {"command", "date", "machine", "amx"} <= set(report)
    for timing in (report["doc_encoding"]["docs_per_s"], report["query_encoding"]["latency_ms"]):
        assert set(timing) == {"fp32", "bf16"} and all(t["p50"] > 0 for t in timing.values())
    assert report["splade_query_encoding"]["latency_ms"]["bf16"]["n"] == 8
    for side in ("docs", "queries"):
        assert 0.999 <= report["cosine"][side]["min"] <= 1.0
    quality = report["quality"]
    assert list(quality) == [
        "fp32 docs, fp32 queries",
        "fp32 docs, bf16 queries",
        "bf16 docs, bf16 queries",
    ]
    for row in quality.values():
        assert set(row) == {"dense", "splade", "hybrid"}
        assert all(0.0 <= r["all"] <= 1.0 and r["unseen"] is None for r in row.values())
    assert (full_collection / "manifest.json").read_bytes() == before

    from bench.report_serving import precision

    table = precision([{**report, "file": str(out)}])
    assert "one splade query" in table and "bf16 docs, bf16 queries" in table


def test_sparse_precision_smoke(tmp_path: Path) -> None:
    """bench_sparse_precision on 20 documents of the sample: both builds record their
    precision, each is evaluated with both query precisions, the section renders."""
    out = tmp_path / "sparse-precision-sample.json"
    sample = str(ROOT / "data" / "cranfield")
    work = str(tmp_path / "work")
    _run("bench_sparse_precision.py", sample, "--work", work, "--max-docs", "20", "--out", str(out))
    report = json.loads(out.read_text())
    assert set(report["builds"]) == {"fp32", "bf16"}
    for docs, b in report["builds"].items():
        assert b["recorded"] == {"sparse": docs, "splade": docs} and b["build_seconds"] > 0
        for r in b["queries"].values():
            assert all(0.0 <= r[p]["all"] <= 1.0 for p in ("sparse", "splade"))

    from bench.report_serving import sparse_precision

    assert "| cranfield |" in sparse_precision([report])


def test_hybrid_parallel_smoke(full_collection: Path, tmp_path: Path) -> None:
    """bench_hybrid_parallel on the sample collection: every system timed, the ratios and
    the paired-tasks figures present (no timing is asserted), and the section rendered."""
    out = tmp_path / "hybrid-parallel-sample.json"
    args = ["--dataset", str(ROOT / "data" / "cranfield"), "--max-queries", "12"]
    _run(
        "bench_hybrid_parallel.py", str(full_collection), *args, "--rounds", "1", "--out", str(out)
    )
    report = json.loads(out.read_text())
    stats = report["latency_ms"]
    assert {"hybrid", "hybrid-serial", "dense", "splade", "dense-eager"} <= set(stats)
    assert all(s["n"] == 12 for s in stats.values())
    assert report["slowest_single"] in report["retrievers"]
    paired = report["paired"]
    assert set(paired["ratio_paired_to_alone_p50"]) == {"dense", "splade", "matmul"}
    assert paired["latency_ms"]["matmul paired (matmul)"]["n"] == 24  # both copies timed
    assert paired["latency_ms"]["dense paired (encoders)"]["n"] == 12

    from bench.report_serving import hybrid_parallel

    section = hybrid_parallel([{**report, "file": str(out)}])
    assert "Two tasks at once" in section
    assert report["hybrid_fusion"] and f"Hybrid's fusion: {report['hybrid_fusion']}" in section


def test_rerank_seeds_smoke(full_collection: Path, tmp_path: Path) -> None:
    """bench_rerank_seeds, label-free, two tiny seeds on the sample collection: each seed
    trains and evaluates, a second call reads them back, another recipe in the same work
    folder is refused, and the section renders."""
    out, work = tmp_path / "rerank-seeds-sample.json", tmp_path / "work"
    args = [str(full_collection), "--dataset", str(ROOT / "data" / "cranfield")]
    args += ["--work", str(work), "--seeds", "0,1", "--max-queries", "30", "--out", str(out), "--"]
    recipe = ["--pseudo-count", "24", "--epochs", "1", "--max-length", "96", "--negatives", "3"]
    recipe += ["--hard-negatives", "1", "--prior-negatives", "1", "--device", "cpu"]
    _run("bench_rerank_seeds.py", *args, *recipe)
    report = json.loads(out.read_text())
    assert report["queries"] == "pseudo" and "--prior-negatives 1" in report["recipe"]
    for run in report["runs"]:
        assert run["steps"] >= 1 and 0.0 <= run["alpha"] <= 1.0
        for pipeline in ("hybrid", "hybrid+rerank"):
            assert 0.0 <= run["test"][pipeline]["all"] <= 1.0
            assert run["test"][pipeline]["unseen"] is None  # no train split: label-free
    stamp = (work / "rr-s0" / "training_args.json").stat().st_mtime
    _run("bench_rerank_seeds.py", *args, *recipe)  # read back, not trained again
    assert (work / "rr-s0" / "training_args.json").stat().st_mtime == stamp
    with pytest.raises(subprocess.CalledProcessError):
        _run("bench_rerank_seeds.py", *args, *recipe[:-4])

    from bench.report_train import rerank_seeds

    assert "mean (min-max)" in rerank_seeds([{**report, "file": str(out)}])

    # bench_rerank on the seed-0 student: each precision at each depth, and its section
    latency = tmp_path / "rerank-precision-sample.json"
    _run(
        "bench_rerank.py", str(full_collection), "--dataset", str(ROOT / "data" / "cranfield"),
        "--model", f"tiny={work / 'rr-s0'}", "--queries", "3", "--depths", "2,4",
        "--threads", "1", "--out", str(latency),
    )  # fmt: skip
    rows = json.loads(latency.read_text())["rows"]
    assert {f"tiny{v}@{d}" for v in ("", "+int8", "+bf16") for d in (2, 4)} < set(rows)
    assert all("ndcg@10_unseen" not in r for r in rows.values())  # Cranfield: no train split
    from bench.report_serving import rerank_precision

    table = rerank_precision([{**json.loads(latency.read_text()), "file": str(latency)}])
    assert "| rerank-precision-sample | tiny | 4 |" in table
