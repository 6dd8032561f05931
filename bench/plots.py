"""Draw the benchmark plots (PNG, beside BENCHMARKS.md in ``plots/``) from result files.

Every point comes from ``bench/results/*.json``; a plot whose result files are missing
is skipped with a line saying which. Nothing is typed by hand:

- ``sparse-latency-vs-docs.png``: query p50 against documents, per sparse engine
  (``sparse-synthetic*.json``);
- ``build-memory-vs-docs.png``: peak build RSS against documents, per sparse engine and
  for the dense build (``sparse-synthetic*.json``, ``dense-memory*.json``);
- ``scifact-ndcg-vs-latency.png``: nDCG@10 against query p50 for every named pipeline
  evaluated on SciFact test (``eval-scifact-all.json``);
- ``ndcg-vs-postings.png``: nDCG@10 against postings per document, per sparse pruning
  level (``pruning-*.json``).

    .venv/bin/python bench/plots.py [--out plots] [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ENGINES = ("native", "seismic", "lucene")


def _load(results: Path, pattern: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(results.glob(pattern))]


def _save(fig: Any, out: Path, name: str, sources: list[str]) -> Path:
    fig.text(0.01, 0.005, "data: " + ", ".join(sources), fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out / name
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _synthetic_rows(results: Path) -> list[dict[str, Any]]:
    rows = [row for report in _load(results, "sparse-synthetic*.json") for row in report["results"]]
    return sorted(rows, key=lambda r: r["docs"])


def sparse_latency(results: Path, out: Path) -> Path | None:
    rows = _synthetic_rows(results)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for engine in ENGINES:
        pts = [(r["docs"], r[engine]["p50_ms"]) for r in rows if engine in r]
        ax.plot(*zip(*pts, strict=True), marker="o", label=engine)
    ax.set(xscale="log", yscale="log", xlabel="documents (synthetic, splade-like)")
    ax.set(ylabel="query p50, ms (one thread)", title="Sparse engines: latency against N")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out, "sparse-latency-vs-docs.png", ["sparse-synthetic*.json"])


def build_memory(results: Path, out: Path) -> Path | None:
    rows = _synthetic_rows(results)
    latest: dict[int, tuple[str, float]] = {}  # size -> (date, MB): the newest run of each
    for r in _load(results, "dense-memory*.json"):
        for n, v in r.items():
            if n.isdigit() and (int(n) not in latest or r["date"] > latest[int(n)][0]):
                latest[int(n)] = (r["date"], v["peak_rss_mb"])
    dense = sorted((n, mb) for n, (_, mb) in latest.items())
    if not rows and not dense:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for engine in ENGINES:
        pts = [(r["docs"], r[engine]["peak_rss_bytes"] / 2**20) for r in rows if engine in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"sparse, {engine}")
    if dense:
        ax.plot(*zip(*dense, strict=True), marker="s", linestyle="--", label="dense (flat)")
    ax.set(xscale="log", yscale="log", xlabel="documents (synthetic)")
    ax.set(ylabel="peak build RSS, MB", title="Peak build memory against N")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return _save(
        fig, out, "build-memory-vs-docs.png", ["sparse-synthetic*.json", "dense-memory*.json"]
    )


def scifact_pipelines(results: Path, out: Path) -> Path | None:
    reports = _load(results, "eval-scifact-all.json")
    if not reports:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in reports[0]["pipelines"].items():
        x, y = r["latency_ms"]["p50"], r["ndcg@10"]
        ax.scatter([x], [y])
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xscale="log", xlabel="query p50, ms (twofold eval, in process)")
    ax.set(ylabel="nDCG@10 (SciFact test, 300 q)", title="SciFact: quality against latency")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out, "scifact-ndcg-vs-latency.png", ["eval-scifact-all.json"])


def pruning(results: Path, out: Path) -> Path | None:
    reports = _load(results, "pruning-*.json")
    if not reports:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for report in reports:
        for retriever in report["retrievers"]:
            levels = [lv for lv in report["levels"] if lv["retriever"] == retriever]
            pts = sorted((lv["postings_per_doc"], lv["ndcg@10"]) for lv in levels)
            label = f"{report['dataset']}, {retriever}"
            ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    ax.set(xscale="log", xlabel="postings per document kept (top-t terms)")
    ax.set(ylabel="nDCG@10 (test)", title="Sparse pruning: quality against postings")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, out, "ndcg-vs-postings.png", ["pruning-*.json"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "plots")
    ap.add_argument("--results", type=Path, default=RESULTS, help="result files to draw from")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for draw in (sparse_latency, build_memory, scifact_pipelines, pruning):
        path = draw(args.results, args.out)
        print(f"{draw.__name__}: {path if path else 'skipped (no result files)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
