"""Regenerate the generated sections of BENCHMARKS.md from ``bench/results/*.json``.

A generated section sits between ``<!-- generated:NAME -->`` and ``<!-- /generated -->``
and is rewritten whole; everything else in BENCHMARKS.md is left as it is. Every row
carries its result file's machine, date and command; nothing is typed by hand.

    python bench/report.py            # rewrite BENCHMARKS.md
    python bench/report.py --check    # exit 1 if BENCHMARKS.md is not up to date
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report_format import load_results, run_line, with_runs  # noqa: E402
from bench.report_serving import (  # noqa: E402
    http_overhead,
    hybrid_parallel,
    precision,
    rerank_precision,
    sparse_precision,
)
from bench.report_train import rerank_seeds, train_dense  # noqa: E402

BENCHMARKS = ROOT / "BENCHMARKS.md"
ENGINES = ("native", "seismic", "lucene")


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


def sparse_synthetic(results: list[dict[str, Any]]) -> str:
    lines = [
        "Synthetic corpora (`bench/synthetic.py`, seed 0): per engine, build time, peak "
        "RSS of the build stage (its own process), size on disk, single-thread query "
        "p50/p99 (IQR) and top-10 overlap with exact (native). Ratio: p50 / lucene p50.",
        "",
        "| docs | engine | build s | peak RSS MB | disk MB | p50 ms (IQR) | p99 ms "
        "| p50 / lucene | top-10 overlap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        sources.append(run_line(report))
        for row in report["results"]:
            lucene = row.get("lucene", {}).get("p50_ms")
            for name in ENGINES:
                r = row.get(name)
                if r is None:
                    continue
                ratio = f"{r['p50_ms'] / lucene:.2f}" if lucene else "-"
                lines.append(
                    f"| {row['docs']:,} | {name} | {r['build_seconds']} | "
                    f"{_mb(r['peak_rss_bytes'])} | {_mb(r['disk_bytes'])} | "
                    f"{r['p50_ms']} ({r['iqr_ms']}) | {r['p99_ms']} | {ratio} | "
                    f"{r['top10_overlap']} |"
                )
    return with_runs([*lines, "", *growth(results)], sources)


def _per_x10(points: list[tuple[int, float]]) -> str:
    """Growth from each size to the next, as a factor per x10 documents."""
    steps = []
    for (n0, v0), (n1, v1) in itertools.pairwise(points):
        factor = (v1 / v0) ** (1 / math.log10(n1 / n0)) if v0 > 0 and n1 > n0 else float("nan")
        steps.append(f"x{factor:.2f} ({n0:,} -> {n1:,})")
    return ", ".join(steps) or "-"


def growth(results: list[dict[str, Any]]) -> list[str]:
    rows = sorted((row for r in results for row in r["results"]), key=lambda row: row["docs"])
    lines = ["Growth per x10 documents (from the rows above, all files together):", ""]
    for name in ENGINES:
        pts = [(row["docs"], row[name]) for row in rows if name in row]
        if len(pts) < 2:
            continue
        p50 = _per_x10([(n, r["p50_ms"]) for n, r in pts])
        rss = _per_x10([(n, r["peak_rss_bytes"]) for n, r in pts])
        disk = _per_x10([(n, r["disk_bytes"]) for n, r in pts])
        lines.append(f"- {name}: p50 {p50}; peak build RSS {rss}; disk {disk}")
    return lines


def dense_memory(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_dense_memory.py`: `twofold index build --retrievers dense` (flat) in "
        "its own process, peak RSS from `wait4`; synthetic corpora and a random one-layer "
        "384-d BERT, so each vector has minilm-l6's size while encoding stays cheap.",
        "",
        "| docs | vectors.npy MB | peak RSS MB | build s |",
        "|---|---|---|---|",
    ]
    sources = []
    for report in results:
        sizes = sorted((int(n), v) for n, v in report.items() if n.isdigit())
        for n, v in sizes:
            lines.append(f"| {n:,} | {v['vectors_mb']} | {v['peak_rss_mb']} | {v['seconds']} |")
        rss = _per_x10([(n, v["peak_rss_mb"]) for n, v in sizes])
        sources.append(run_line(report) + f"; peak RSS growth per x10 documents: {rss}")
    return with_runs(lines, sources)


def pruning(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_pruning.py`: each document keeps its top-t terms (the build's own "
        "`prune`), every test query scored exactly (q.D^T); unpruned is checked against the "
        "native engine (difference in the last column). SciFact's unseen-document queries: "
        "those none of whose judged documents is a train positive.",
        "",
        "| dataset | retriever | top-t | postings / doc | nDCG@10 | unseen nDCG@10 |",
        "|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        for lv in report["levels"]:
            unseen = lv.get("unseen_ndcg@10")
            lines.append(
                f"| {report['dataset']} | {lv['retriever']} | {lv['top_k']} | "
                f"{lv['postings_per_doc']:.1f} | {lv['ndcg@10']:.4f} | "
                f"{f'{unseen:.4f}' if unseen is not None else '-'} |"
            )
        checks = ", ".join(
            f"{name} {r['native_check']['difference']:+.6f}"
            for name, r in report["retrievers"].items()
        )
        sources.append(run_line(report, f"exact minus native engine, unpruned: {checks}"))
    return with_runs(lines, sources)


def seismic_sweep(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_seismic_sweep.py`: one Seismic index per `n_postings` (Twofold's other "
        "build parameters), searched through `pyseismic-lsr` at k=10, one thread, queries "
        'in a rotating order; "20 + exact re-score" is what Twofold\'s engine does (20 '
        "candidates scored exactly). Ratio: p50 / exact scoring's p50 (scipy CSC) in the "
        "same run; overlap: top-10 overlap with exact.",
        "",
        "| docs | n_postings | build s | query_cut | heap_factor | re-scored | p50 ms (q1-q3) "
        "| / exact | overlap@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pattern = re.compile(r"query_cut=(\w+) heap_factor=([\d.]+)( 20 \+ exact re-score)?")
    sources = []
    for report in results:
        for row in report["results"]:
            n_postings = row["build_params"]["n_postings"]
            for name, r in row["systems"].items():
                m = pattern.search(name)
                cut, heap, rescored = (m[1], m[2], "yes" if m[3] else "no") if m else ("exact",) * 3
                lines.append(
                    f"| {row['docs']:,} | {n_postings} | {row['build_seconds']} | {cut} | {heap} "
                    f"| {rescored} | {r['p50_ms']} ({r['q1_ms']}-{r['q3_ms']}) | "
                    f"{r['ratio_to_exact']:.2f} | {r['top10_overlap']} |"
                )
        load = report["load_average_end"][0]
        sources.append(run_line(report, f"load average {load:.1f} at the end"))
    return with_runs(lines, sources)


def seismic_quality(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_seismic_sweep.py --collection`: Twofold's seismic engine (candidates "
        "re-scored exactly) on a Seismic index rebuilt from a real collection's forward index "
        "(`n_postings` as listed; the smaller is what the size rule gives), under each query "
        "setting, against the exact native engine; test split.",
        "",
        "| dataset | retriever | n_postings | query_cut | heap_factor | nDCG@10 seismic | exact "
        "| overlap@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        for r in report["results"]:
            lines.append(
                f"| {report['dataset']} | {r['retriever']} | {r.get('n_postings', '-')} | "
                f"{r['query_cut'] or 'all'} | "
                f"{r['heap_factor']} | {r['ndcg@10']:.4f} | {r['exact_ndcg@10']:.4f} | "
                f"{r['overlap@10']:.4f} |"
            )
        sources.append(run_line(report))
    return with_runs(lines, sources)


def sparse_limit(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_sparse_limit.py`: the native (exact) engine's `scores` (no top-k), one "
        "thread, in postings scored per second, against the same run's streamed read "
        "bandwidth (numpy sum over 1 GiB; a posting moves 8 bytes, int32 doc ordinal + "
        "float32 weight) and against the numpy loop it replaced (interleaved query by query).",
        "",
        "| docs | postings touched / query | scores p50 ms | numpy loop p50 ms | search p50 ms "
        "| postings / s | share of read bandwidth | speedup over the loop |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        for r in report["results"]:
            if not isinstance(r["p50_ms"], dict):
                continue  # a run from before the loop was timed beside it
            p50 = r["p50_ms"]
            lines.append(
                f"| {r['docs']:,} | {r['postings_touched_per_query']:,} | {p50['scores']} | "
                f"{p50['numpy_loop']} | {p50['search']} | {r['postings_per_s'] / 1e6:.0f}M | "
                f"{r['bytes_share_of_read_bandwidth']:.3f} | "
                f"{r['scores_speedup_over_numpy_loop']:.2f}x |"
            )
        sources.append(run_line(report, f"read {report['read_bytes_per_s'] / 1e9:.1f} GB/s"))
    return with_runs(lines, sources)


def sparse_quality(results: list[dict[str, Any]]) -> str:
    lines = [
        "Each file: `twofold eval DIR --dataset D --pipeline sparse,splade --sparse-engine "
        "ENGINE --out bench/results/quality-D-ENGINE.json` on one collection built with "
        "`twofold index build D --retrievers ...` (seismic defaults, `SeismicParams`).",
        "",
        "| dataset | pipeline | engine | nDCG@10 | source |",
        "|---|---|---|---|---|",
    ]
    for report in results:
        for pipe, metrics in sorted(report.get("pipelines", {}).items()):
            lines.append(
                f"| {report['dataset']} | {pipe} | {report['engine']} | "
                f"{metrics['ndcg@10']:.4f} | `{report['file']}` |"
            )
    return "\n".join(lines)


def _quality() -> list[dict[str, Any]]:
    out = []
    for data in load_results("quality-"):
        _, dataset, engine = Path(data["file"]).stem.split("-", 2)
        out.append({**data, "dataset": dataset, "engine": engine})
    return out


def milvus_quality(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_milvus.py`: the same pipelines on an embedded collection and on its "
        "copy pushed into Milvus (stored vectors, not re-encoded). `milvus-rrf` and "
        "`milvus-weighted` are fused by Milvus's `hybrid_search`; their embedded column is "
        "Twofold's own fusion of the same three retrievers (RRF k=60; convex min-max, the "
        "same family weights). Overlap@10: mean share of a query's top 10 in both.",
        "",
        "| dataset | pipeline | embedded | Milvus | delta | overlap@10 "
        "| unseen: embedded | unseen: Milvus |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sources = []
    for result in results:
        for name, r in result["pipelines"].items():
            unseen = (
                f"{r['unseen_ndcg@10_embedded']:.4f} | {r['unseen_ndcg@10_milvus']:.4f}"
                if "unseen_ndcg@10_embedded" in r
                else "- | -"
            )
            lines.append(
                f"| {result['dataset']} {result['split']} ({r['queries']} q) | {name} | "
                f"{r['ndcg@10_embedded']:.4f} | {r['ndcg@10_milvus']:.4f} | {r['delta']:+.4f} "
                f"| {r['overlap@10']:.3f} | {unseen} |"
            )
        sources.append(run_line(result, f"server: {result['server']}"))
    return with_runs(lines, sources)


def peers(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_peers.py`: in one process, per query in a rotating order, each "
        "comparison's systems on the same collection and queries (sparse and dense: the "
        "same query vectors, encoded once). nDCG@10 on the test split; overlap@10 with the "
        "comparison's first system; p50 (q1-q3) in ms, one thread; ratio = p50 / the first "
        "system's p50, in the same run.",
        "",
        "| dataset | comparison | system | nDCG@10 | overlap@10 | p50 ms (q1-q3) | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        for name, comp in report["comparisons"].items():
            for system, r in comp["systems"].items():
                lat = r["latency_ms"]
                lines.append(
                    f"| {report['dataset']} ({report['queries']} q) | {name} | {system} | "
                    f"{r['ndcg@10']:.4f} | {r['overlap@10']:.3f} | {lat['p50']:.3f} "
                    f"({lat['p25']:.3f}-{lat['p75']:.3f}) | {r['ratio_p50']:.2f} |"
                )
        load = report["load_average"]
        sources.append(
            run_line(
                report,
                f"{report['rounds']} rounds; load average {load['before'][0]:.1f} before, "
                f"{load['after'][0]:.1f} after",
            )
        )
    return with_runs(lines, sources)


SECTIONS = {
    "sparse-synthetic": lambda: sparse_synthetic(load_results("sparse-synthetic")),
    "sparse-quality": lambda: sparse_quality(_quality()),
    "hybrid-parallel": lambda: hybrid_parallel(load_results("hybrid-parallel-")),
    "milvus-quality": lambda: milvus_quality(load_results("milvus-quality-")),
    "peers": lambda: peers(load_results("peers-")),
    "pruning": lambda: pruning(load_results("pruning-")),
    "seismic-sweep": lambda: seismic_sweep(load_results("seismic-sweep")),
    "seismic-quality": lambda: seismic_quality(load_results("seismic-quality-")),
    "sparse-limit": lambda: sparse_limit(load_results("sparse-limit")),
    "dense-memory": lambda: dense_memory(load_results("dense-memory")),
    "train-dense": lambda: train_dense(load_results("train-dense-")),
    "rerank-seeds": lambda: rerank_seeds(load_results("rerank-seeds-")),
    "http-overhead": lambda: http_overhead(load_results("http-overhead-")),
    "rerank-precision": lambda: rerank_precision(load_results("rerank-precision-")),
    "precision": lambda: precision(load_results("precision-")),
    "sparse-precision": lambda: sparse_precision(load_results("sparse-precision-")),
}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(
            rf"(<!-- generated:{re.escape(name)} -->\n).*?(<!-- /generated -->)", re.S
        )
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(2), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    old = BENCHMARKS.read_text()
    new = render(old)
    if args.check:
        return int(new != old)
    BENCHMARKS.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
