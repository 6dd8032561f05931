"""The generated sections of training runs: the fine-tuned dense model and its
reranker per seed (``train-dense``), and a reranker recipe over seeds on one collection
(``rerank-seeds``) (``bench/report.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report_format import all_unseen, run_line, with_runs


def mean_spread(values: list[float], signed: bool = False) -> str:
    mean, f = sum(values) / len(values), "+.4f" if signed else ".4f"
    return f"**{mean:{f}}** ({min(values):{f}} to {max(values):{f}})"


def train_dense(results: list[dict[str, Any]]) -> str:
    """`bench/bench_train_dense.py`: per seed, the fine-tuned dense bi-encoder inside
    its collection, and the reranker trained on that collection."""
    lines = [
        "`bench/bench_train_dense.py`: per seed, `twofold train dense` on the train split, "
        "the collection's dense sub-index rebuilt from the student, then (where the run "
        "has them) `twofold train reranker` on that collection and `hybrid+rerank`. "
        "nDCG@10 on the test split, all queries / the unseen-document ones; held-out: "
        "the trainer's own held-out train queries (collection dense -> student); reranker "
        "held-out: the reranker trainer's held-out train queries, fused -> reranked at the "
        "alpha chosen on those same queries (so an optimistic figure), where it tuned one.",
        "",
        "| file | seed | held-out dense | dense | hybrid | hybrid+rerank | rerank gain "
        "| reranker held-out (alpha) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        name = Path(report["file"]).stem
        base = report["untrained"]
        cells = {k: f"{v['all']:.4f} / {v['unseen']:.4f}" for k, v in base.items()}
        lines.append(f"| {name} | untrained | | {cells['dense']} | {cells['hybrid']} | | | |")
        cols: dict[str, list[float]] = {}
        for run in report["runs"]:
            test = run["dense"]["test"]
            held = run["dense"]["heldout_dense"]
            rr = run.get("rerank", {}).get("test")
            row = [f"{test[p]['all']:.4f} / {test[p]['unseen']:.4f}" for p in ("dense", "hybrid")]
            for p in ("dense", "hybrid"):
                cols.setdefault(f"{p} all", []).append(test[p]["all"])
                cols.setdefault(f"{p} unseen", []).append(test[p]["unseen"])
            if rr:
                reranked, fused = rr["hybrid+rerank"], rr["hybrid"]
                gain = (reranked["all"] - fused["all"], reranked["unseen"] - fused["unseen"])
                row += [f"{reranked['all']:.4f} / {reranked['unseen']:.4f}"]
                row += [f"{gain[0]:+.4f} / {gain[1]:+.4f}"]
                for key, value in (("rr all", reranked["all"]), ("rr unseen", reranked["unseen"])):
                    cols.setdefault(key, []).append(value)
                cols.setdefault("gain all", []).append(gain[0])
                cols.setdefault("gain unseen", []).append(gain[1])
                row += [_rerank_heldout(run["rerank"])]
            else:
                row += ["", "", ""]
            lines.append(
                f"| {name} | {run['seed']} | {held[0]:.4f} -> {held[1]:.4f} | "
                + " | ".join(row)
                + " |"
            )
        if len(report["runs"]) > 1:
            mean = [
                f"{mean_spread(cols[f'{c} all'], c == 'gain')} / "
                f"{mean_spread(cols[f'{c} unseen'], c == 'gain')}"
                if f"{c} all" in cols
                else ""
                for c in ("dense", "hybrid", "rr", "gain")
            ]
            lines.append(f"| {name} | mean (min-max) | | " + " | ".join(mean) + " | |")
        note = f"KL weight {report['runs'][0]['dense']['kl_weight']}" if report["runs"] else ""
        minutes = [run["dense"]["train_seconds"] / 60 for run in report["runs"]]
        if minutes:  # the loop's precision: recorded since session 12 (before: auto, fp32)
            note += f"; training precision {report.get('precision', 'auto')}, "
            note += f"{min(minutes):.1f}-{max(minutes):.1f} min a seed"
        if report.get("rerank_recipe"):
            note += f"; reranker `{report['rerank_recipe']}`"
        sources.append(run_line(report, note))
    return with_runs(lines, sources)


def _rerank_heldout(rerank: dict[str, Any]) -> str:
    """``fused -> reranked (alpha)`` on the reranker trainer's held-out train queries
    (recorded since session 13), else the alpha alone."""
    fused, reranked = rerank.get("heldout") or (None, None)
    if fused is None or reranked is None:
        return f"({rerank['alpha']})"
    return f"{fused:.4f} -> {reranked:.4f} ({rerank['alpha']})"


def rerank_seeds(results: list[dict[str, Any]]) -> str:
    """`bench/bench_rerank_seeds.py`: one reranker recipe over seeds on one collection."""
    lines = [
        "`bench/bench_rerank_seeds.py`: per seed, `twofold train reranker` with the recipe "
        "of the Runs line, then `hybrid` and `hybrid+rerank` on the test split (nDCG@10; "
        "SciFact: all queries / the unseen-document ones). Held-out: the trainer's own "
        "held-out training queries, fused -> reranked at the alpha chosen on them.",
        "",
        "| file | seed | held-out (alpha) | hybrid | hybrid+rerank | gain |",
        "|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        name = Path(report["file"]).stem
        gains: list[float] = []
        for run in report["runs"]:
            test = run["test"]
            fused, reranked = test["hybrid"], test["hybrid+rerank"]
            gains.append(reranked["all"] - fused["all"])
            lines.append(
                f"| {name} | {run['seed']} | {_rerank_heldout(run)} | {all_unseen(fused)} | "
                f"{all_unseen(reranked)} | {_gain(fused, reranked)} |"
            )
        if len(report["runs"]) > 1:
            lines.append(f"| {name} | mean (min-max) | | | | {mean_spread(gains, True)} |")
        minutes = [run["train_seconds"] / 60 for run in report["runs"] if run["train_seconds"]]
        note = f"`--queries {report['queries']} {report['recipe']}`"
        if minutes:
            note += f", {min(minutes):.1f}-{max(minutes):.1f} min of training a seed"
        sources.append(run_line(report, note))
    return with_runs(lines, sources)


def _gain(fused: dict[str, Any], reranked: dict[str, Any]) -> str:
    gain = f"{reranked['all'] - fused['all']:+.4f}"
    if fused["unseen"] is None:
        return gain
    return gain + f" / {reranked['unseen'] - fused['unseen']:+.4f}"
