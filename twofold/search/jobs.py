"""Library functions behind the CLI's search and eval commands (testable without a shell)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twofold.core.errors import InputError
from twofold.core.types import Qrels, Query, Ranking
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.search.evaluate import (
    NO_HITS,
    NO_HITS_RULE,
    EvalReport,
    PipelineResult,
    cutoff_warnings,
    evaluate,
    write_trec_run,
)
from twofold.search.pipeline import Pipeline, Reranker, build_pipeline
from twofold.search.sparse import use_sparse_engine
from twofold.search.unseen import REFERENCE_SPLIT, SUBSET_NAME, unseen_document_queries

MAX_K = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalJob:
    collection: Path
    dataset: Path
    split: str = "test"
    pipelines: tuple[str, ...] = ("bm25",)
    k: int = 100
    out: Path | None = None
    runs: Path | None = None
    max_queries: int | None = None
    progress: bool = True
    reranker: str | None = None  # cross-encoder directory, for the +rerank pipelines
    sparse_engine: str | None = None  # native | lucene | seismic; None: the collection's own choice
    no_hits: str = "zero"  # zero | skip (BEIR): see ``evaluate``


def _check_writable(out: Path | None, runs: Path | None) -> None:
    """Refuse unusable output paths before any pipeline runs (and create nothing)."""
    if out is not None:
        if out.is_dir():
            raise InputError(f"--out {out} is a directory; give a file path")
        if not out.parent.is_dir():
            raise InputError(f"--out: directory {out.parent} does not exist")
    if runs is not None and runs.exists() and not runs.is_dir():
        raise InputError(f"--runs {runs} exists and is not a directory")


def open_reranker(path: str | None) -> Reranker | None:
    """The cross-encoder at ``path`` (an HF *ForSequenceClassification directory), if any."""
    if path is None:
        return None
    from twofold.models.reranker import RerankerConfig, load_reranker

    return load_reranker(RerankerConfig(path))


def leak_subsets(dataset: BeirDataset, split: str, qrels: Qrels) -> dict[str, set[str]]:
    """The unseen-document queries of ``split`` when the dataset has a training split (and
    ``split`` is another one); see :mod:`twofold.search.unseen`."""
    if (
        split == REFERENCE_SPLIT
        or not (dataset.root / "qrels" / f"{REFERENCE_SPLIT}.tsv").is_file()
    ):
        return {}
    return {SUBSET_NAME: unseen_document_queries(qrels, dataset.qrels(REFERENCE_SPLIT))}


def run_eval(job: EvalJob) -> EvalReport:
    """Evaluate each pipeline of ``job`` on the dataset split; write JSON and runs if asked."""
    if not 1 <= job.k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}")
    if job.max_queries is not None and job.max_queries < 1:
        raise InputError("--max-queries must be >= 1")
    if job.no_hits not in NO_HITS:
        raise InputError(f"--no-hits must be one of {', '.join(NO_HITS)}, not {job.no_hits!r}")
    _check_writable(job.out, job.runs)
    collection = Collection(job.collection)
    use_sparse_engine(collection, job.sparse_engine)
    dataset = BeirDataset(job.dataset)
    qrels = dataset.qrels(job.split)
    queries = dataset.queries(job.split, qrels)
    if job.max_queries is not None:
        queries = queries[: job.max_queries]
    if not queries:
        raise InputError(f"no judged queries in {job.dataset} split {job.split!r}")
    report = EvalReport(
        job.dataset.name,
        job.split,
        subsets=leak_subsets(dataset, job.split, qrels),
        no_hits=job.no_hits,
    )
    report.warnings = cutoff_warnings(job.k)
    for warning in report.warnings:
        log.warning("%s", warning)
    reranker = open_reranker(job.reranker)
    for name in job.pipelines:
        pipeline = build_pipeline(collection, name, depth=max(job.k, 100), reranker=reranker)
        report.results.append(_evaluate(name, pipeline, job, queries, qrels))
    if job.out is not None:
        job.out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if job.runs is not None:
        job.runs.mkdir(parents=True, exist_ok=True)
        for result in report.results:
            write_trec_run(job.runs / f"{result.name}.trec", result.name, result.run)
    return report


def _evaluate(
    name: str, pipeline: Pipeline, job: EvalJob, queries: Sequence[Query], qrels: Qrels
) -> PipelineResult:
    """``evaluate`` of one pipeline, counting the queries it answered degraded (and why:
    each reason up to its first colon, e.g. ``rerank skipped``)."""
    reasons: Counter[str] = Counter()
    degraded = 0

    def search(query: Query) -> Ranking:
        nonlocal degraded
        outcome = pipeline.run(query, job.k)
        if outcome.degraded:
            degraded += 1
            reasons.update({r.split(":")[0].strip() for r in outcome.degraded})
        return outcome.ranking

    watched: Callable[[Query], Ranking] = search
    result = evaluate(name, watched, queries, qrels, progress=job.progress, no_hits=job.no_hits)
    result.degraded_queries, result.degraded = degraded, dict(reasons.most_common())
    if result.no_hit_queries:
        log.info(
            "pipeline %s: %d judged queries had no hits (%s)",
            name,
            result.no_hit_queries,
            NO_HITS_RULE[job.no_hits],
        )
    if degraded:
        log.warning("pipeline %s ran degraded on %d queries: %s", name, degraded, result.degraded)
    return result


def search_text(
    collection: Collection,
    text: str,
    pipeline: str = "bm25",
    k: int = 10,
    reranker: str | None = None,
) -> Ranking:
    if not text.strip():
        raise InputError("the query is empty")
    if not 1 <= k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}")
    built = build_pipeline(collection, pipeline, reranker=open_reranker(reranker))
    return built.search(Query("q", text), k)


def format_hits(collection: Collection, ranking: Ranking, width: int = 100) -> str:
    lines = []
    for rank, hit in enumerate(ranking.hits, start=1):
        doc = collection.docs.get(hit.doc_id)
        title = (doc.title or doc.text).replace("\n", " ")[:width]
        lines.append(f"{rank:>3}. {hit.score:9.4f}  {hit.doc_id:<12} {title}")
    return "\n".join(lines) if lines else "(no hits)"


def ranking_json(collection: Collection, ranking: Ranking) -> list[dict[str, object]]:
    out = []
    for rank, hit in enumerate(ranking.hits, start=1):
        doc = collection.docs.get(hit.doc_id)
        out.append(
            {
                "rank": rank,
                "doc_id": hit.doc_id,
                "score": hit.score,
                "title": doc.title,
                "sources": {k: {"rank": r, "score": s} for k, (r, s) in hit.sources.items()},
            }
        )
    return out


def parse_pipelines(values: Sequence[str]) -> tuple[str, ...]:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        raise InputError("give at least one --pipeline")
    return tuple(dict.fromkeys(names))
