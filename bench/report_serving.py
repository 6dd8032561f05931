"""The generated sections of the query path: retrievers in parallel inside ``hybrid``,
the HTTP overhead, and the dense encoder's precision (``bench/report.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report_format import all_unseen, run_line, with_runs


def hybrid_parallel(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_hybrid_parallel.py`: in one process, per query in a rotating order, "
        "each single-retriever pipeline at k, `hybrid` as served (retrievers on the "
        "pipeline's thread pool; since session 13 in at most one lane per core, dearest "
        "first) and `hybrid-serial` (the same pipeline, retrievers one after another); "
        "where a run has them, `-eager` rows are the same pipelines with "
        "the encoders' TorchScript traces off, their ratio taken to the slowest eager "
        "single. Milliseconds: p50 (q1-q3, p10-p90).",
        "",
        "| file | system | p50 ms | q1-q3 | p10-p90 | p50 / slowest single | p50 / serial |",
        "|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        stats = report["latency_ms"]
        slowest = stats[report["slowest_single"]]["p50"]
        slowest_eager = stats[report.get("slowest_single_eager", report["slowest_single"])]["p50"]
        threads = report.get("torch_threads", "-")
        name = f"{Path(report['file']).stem}, torch threads {threads}"
        for system, r in stats.items():
            base = slowest_eager if system.endswith("-eager") else slowest
            ratio = f"{r['p50'] / base:.2f}"
            serial = (
                f"{r['p50'] / stats['hybrid-serial']['p50']:.2f}"
                if system in ("hybrid", "hybrid-serial", "hybrid-lane-each")
                else ""
            )
            lines.append(
                f"| {name} | {system} | {r['p50']:.1f} | {r['p25']:.1f}-{r['p75']:.1f} | "
                f"{r['p10']:.1f}-{r['p90']:.1f} | {ratio} | {serial} |"
            )
        inner = ", ".join(
            f"{n.removeprefix('retrieve.')} {v['p50']:.1f}"
            for n, v in report["hybrid_inner_retrieve_ms"].items()
        )
        load = report["load_average"]
        sources.append(
            run_line(
                report,
                f"{report['queries']} queries x {report['rounds']} rounds, torch threads "
                f"{report.get('torch_threads', '-')}; load average "
                f"{load['before'][0]:.1f} before, {load['after'][0]:.1f} after",
            )
            + (
                f". Hybrid's fusion: {report['hybrid_fusion']}"
                if report.get("hybrid_fusion")
                else ""
            )
            + f". Inside hybrid, each retriever's own p50 at the fusion depth: {inner} ms"
            + _paired(report.get("paired"))
        )
    return with_runs(lines, sources)


def _paired(paired: dict[str, Any] | None) -> str:
    """The run's two-tasks-at-once figures (``bench_hybrid_parallel.paired``), or ''."""
    if not paired:
        return ""
    stats, ratio = paired["latency_ms"], paired["ratio_paired_to_alone_p50"]
    parts = [
        f"{name} {stats[f'{name} alone']['p50']:.1f} alone, "
        f"{stats[f'{name} paired ({label})']['p50']:.1f} paired ({ratio[name]:.2f}x)"
        for name, label in (("dense", "encoders"), ("splade", "encoders"), ("matmul", "matmul"))
    ]
    return (
        ". Two tasks at once on two threads, p50 ms of one call (dense and splade encoders "
        "beside each other; the matmul beside a copy of itself): " + "; ".join(parts)
    )


def http_overhead(results: list[dict[str, Any]]) -> str:
    lines = [
        "`bench/bench_load.py --interleaved`: serial calls, the in-process pipeline and "
        "`/v1/search` interleaved query by query in a rotating order. Gap = HTTP p50 - "
        "in-process p50, ms; `took` = the service's own time past the pipeline (took_ms p50 "
        "- in-process p50); client = the client thread's CPU a request, ms.",
        "",
        "| file | pipeline | load | in-process p50 | variant | client | gap | took | client CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        local = report["in_process_ms"]["p50"]
        before, after = report["load_average_1_5_15_before"], report["load_average_1_5_15_after"]
        load = f"{before[0]:.1f}-{after[0]:.1f}"
        for variant, r in report["http"].items():
            fields = "all fields" if r["fields"] is None else ",".join(r["fields"])
            lines.append(
                f"| {Path(report['file']).stem} | {report.get('pipeline', '-')} | {load} | "
                f"{local:.1f} | {variant} ({fields}) | {r['client']} | "
                f"**{r['gap_p50_ms']:+.1f}** | "
                f"{r['took_ms']['p50'] - local:+.1f} | {r['client_cpu_ms']['p50']:.1f} |"
            )
        sources.append(run_line(report, f"{report['queries']} queries x {report['rounds']} rounds"))
    return with_runs(lines, sources)


def precision(results: list[dict[str, Any]]) -> str:
    """`bench/bench_precision.py`: bfloat16 against float32 for the query encoders and
    dense documents."""
    lines = [
        "`bench/bench_precision.py`: minilm-l6 (and, where a run has it, splade-tiny's query "
        "side) in float32 and in bfloat16, interleaved in one run. Documents: docs/s of "
        "minilm-l6 `encode_docs` (256 tokens, batch 32, every core), median (q1-q3) over "
        "rounds; queries: one traced encoding, one torch thread, p50 (q1-q3) ms; cosine: "
        "between the two precisions' minilm-l6 vectors of the same texts, smallest / median. "
        "Native bfloat16: AMX tiles, AVX512-BF16 dot products or none; where the CPU has "
        "either, splade's float32 head runs behind its bfloat16 bound "
        "(`models/sparse_head.py`, from session 14 on), so its fp32 column is that path.",
        "",
        "| file | native bf16 | measure | fp32 | bf16 | bf16 / fp32 |",
        "|---|---|---|---|---|---|",
    ]
    quality = [
        "",
        "`twofold eval` of the same collection, test split, nDCG@10 on all queries / the "
        "unseen-document ones (where the dataset has a train split), and p50 ms; the "
        "splade and dense query sides both follow the queries' precision:",
        "",
        "| file | dense documents, queries | dense | splade | hybrid | dense p50 | hybrid p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    heads = [
        "",
        "splade-tiny's float32 head, plain and behind its bfloat16 bound (where a run has "
        "it: CPUs with native bfloat16), the two interleaved in the same run:",
        "",
        "| file | measure | plain | prefiltered | prefiltered / plain |",
        "|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        name, amx = Path(report["file"]).stem, _native_bf16(report)
        head = report.get("splade_head")
        if head:
            for label, stats, ratio, f in (
                (
                    "documents, docs/s",
                    head["docs"]["docs_per_s"],
                    head["docs"]["ratio_prefiltered_to_plain"],
                    ".1f",
                ),
                (
                    "one query, p50 ms",
                    head["queries"]["latency_ms"],
                    head["queries"]["ratio_prefiltered_to_plain_p50"],
                    ".2f",
                ),
            ):
                cells = [
                    f"{stats[p]['p50']:{f}} ({stats[p]['p25']:{f}}-{stats[p]['p75']:{f}})"
                    for p in ("plain", "prefiltered")
                ]
                heads.append(
                    f"| {name} | {label} | " + " | ".join(cells) + f" | **{ratio:.2f}x** |"
                )
        docs = report["doc_encoding"]
        timed = [
            ("documents, docs/s", docs["docs_per_s"], docs["ratio_bf16_to_fp32"], ".1f"),
            *(
                ("splade documents, docs/s", sd["docs_per_s"], sd["ratio_bf16_to_fp32"], ".1f")
                for sd in [report.get("splade_doc_encoding")]
                if sd
            ),
            *(
                (label, report[key]["latency_ms"], report[key]["ratio_bf16_to_fp32_p50"], ".2f")
                for label, key in (
                    ("one query, p50 ms", "query_encoding"),
                    ("one splade query, p50 ms", "splade_query_encoding"),
                )
                if key in report
            ),
        ]
        for label, stats, ratio, f in timed:
            cells = [
                f"{stats[p]['p50']:{f}} ({stats[p]['p25']:{f}}-{stats[p]['p75']:{f}})"
                for p in ("fp32", "bf16")
            ]
            lines.append(
                f"| {name} | {amx} | {label} | " + " | ".join(cells) + f" | **{ratio:.2f}x** |"
            )
        for side, cos in report["cosine"].items():
            lines.append(
                f"| {name} | {amx} | cosine, {side} | 1 | {cos['min']:.5f} / "
                f"{cos['median']:.5f} | |"
            )
        for setting, r in report.get("quality", {}).items():
            cells = [all_unseen(r[p]) if p in r else "-" for p in ("dense", "splade", "hybrid")]
            quality.append(
                f"| {name} | {setting} | " + " | ".join(cells) + " | "
                f"{r['dense']['p50_ms']:.1f} | {r['hybrid']['p50_ms']:.1f} |"
            )
        rounds = docs["docs_per_s"]["fp32"]["n"]
        n_queries = report["query_encoding"]["queries"]
        note = f"{docs['docs']} documents x {rounds} rounds, {n_queries} queries"
        sources.append(run_line(report, note))
    tables = lines + (heads if len(heads) > 5 else []) + (quality if len(quality) > 5 else [])
    return with_runs(tables, sources)


def _native_bf16(report: dict[str, Any]) -> str:
    """What multiplies bfloat16 natively on a run's machine (its provenance line says)."""
    if report["amx"]:
        return "AMX"
    return "AVX512-BF16" if "AVX512-BF16" in report["machine"] else "no"


def sparse_precision(results: list[dict[str, Any]]) -> str:
    """`bench/bench_sparse_precision.py`: the learned-sparse documents in both precisions."""
    lines = [
        "`bench/bench_sparse_precision.py`: `twofold index build --retrievers sparse,splade "
        "--precision P` for each P, one after another in one run, then `twofold eval` of "
        "each with float32 and with bfloat16 queries (`TWOFOLD_PRECISION`). nDCG@10 on all "
        "test queries / the unseen-document ones (where the dataset has a train split).",
        "",
        "| dataset | AMX | documents | build s | queries | sparse | splade |",
        "|---|---|---|---|---|---|---|",
    ]
    sources = []
    for report in results:
        amx = "yes" if report["amx"] else "no"
        for docs, b in report["builds"].items():
            for queries, r in b["queries"].items():
                cells = [all_unseen(r[p]) for p in ("sparse", "splade")]
                lines.append(
                    f"| {report['dataset']} | {amx} | {docs} | {b['build_seconds']:.1f} | "
                    f"{queries} | " + " | ".join(cells) + " |"
                )
        sources.append(run_line(report))
    return with_runs(lines, sources)


RERANK_VARIANTS = (("", "float32"), ("+int8", "int8"), ("+bf16", "bfloat16"))


def _ndcg_cell(row: dict[str, Any]) -> str:
    """A bench_rerank row's nDCG@10, and on the unseen-document queries where it has them."""
    return all_unseen({"all": row["ndcg@10"], "unseen": row.get("ndcg@10_unseen")})


def rerank_precision(results: list[dict[str, Any]]) -> str:
    """`bench/bench_rerank.py`: each student's float32, int8 and bfloat16 at each depth."""
    lines = [
        "`bench/bench_rerank.py`: the collection's `hybrid` gives each test query's fused "
        "candidates once; every variant reranks the top `depth` of them (queries "
        "interleaved over the variants) with the alpha stored in the model. Each cell: "
        "nDCG@10 (where the run has them, all queries / the unseen-document ones), then "
        "p50 (p90) ms of `CrossEncoder.score` for that query's candidates, tokenizing "
        "included.",
        "",
        "| file | student | depth | " + " | ".join(label for _, label in RERANK_VARIANTS) + " |",
        "|---|---|---|" + "---|" * len(RERANK_VARIANTS),
    ]
    sources = []
    for report in results:
        name = Path(report["file"]).stem
        rows = report["rows"]
        cells: dict[tuple[str, int], dict[str, str]] = {}
        for key, row in rows.items():
            if "depth" not in row:
                continue
            student = key.rsplit("@", 1)[0]
            base, variant = student, ""
            for suffix, _ in RERANK_VARIANTS[1:]:
                if student.endswith(suffix):
                    base, variant = student.removesuffix(suffix), suffix
            score = _ndcg_cell(row)
            cells.setdefault((base, row["depth"]), {})[variant] = (
                f"{score}, {row['p50_ms']:.1f} ({row['p90_ms']:.1f}) ms"
            )
        for (student, depth), found in sorted(cells.items()):
            values = " | ".join(found.get(suffix, "-") for suffix, _ in RERANK_VARIANTS)
            lines.append(f"| {name} | {student} | {depth} | {values} |")
        fused = rows.get("hybrid (no rerank)", {})
        note = f"{report['queries']} queries, torch threads {report.get('torch_threads', '-')}"
        if "ndcg@10" in fused:
            score = _ndcg_cell(fused)
            note += f"; `hybrid` alone: nDCG@10 {score}"
        sources.append(run_line(report, note))
    return with_runs(lines, sources)
