"""``twofold serve`` and ``twofold tune-fusion``: thin wrappers over library functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from twofold.core.errors import InputError


def _serve(args: argparse.Namespace) -> int:
    from twofold.app.main import serve
    from twofold.app.settings import Settings

    overrides: dict[str, Any] = {"collections": [Path(d) for d in args.dirs]}
    options = (
        "reranker",
        "default_pipeline",
        "time_budget_ms",
        "search_threads",
        "torch_threads",
        "sparse_engine",
    )
    for name in options:
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.no_warmup:
        overrides["warmup"] = False
    # The rest (e.g. TWOFOLD_API_KEY: keep secrets off the command line) comes from the env.
    serve(Settings(**overrides), host=args.host, port=args.port)
    return 0


PSEUDO_REFUSED = (
    "tune-fusion does not tune on pseudo-queries: the index still holds each pseudo-query's "
    "words, so bm25 and sparse find its source by copying them, and held-out pseudo-queries "
    "share that bias (measured on Cranfield: weights tuned on them went to bm25 0.7 and "
    "lowered test nDCG@10 from 0.4138 to 0.3927). A collection without labels keeps its "
    "untuned hybrid, one vote per model family (bm25 / splade-tiny / minilm-l6), which beat "
    "RRF and every single retriever there; `twofold optimize DIR --queries pseudo` runs the "
    "label-free training steps. To tune fusion, give judged queries: --dataset D --split S"
)


def _tune_fusion(args: argparse.Namespace) -> int:
    from twofold.search.tune import TuneJob, tune_fusion

    if args.queries == "pseudo":
        raise InputError(PSEUDO_REFUSED)
    if args.dataset is None:
        raise InputError("tune-fusion needs judged queries: --dataset BEIR_DIR [--split S]")
    report = tune_fusion(
        TuneJob(
            collection=Path(args.dir),
            dataset=Path(args.dataset),
            split=args.split,
            max_queries=args.max_queries,
            step=args.step,
            write=not args.dry_run,
        )
    )
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


def add_service_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser(
        "serve",
        help="serve collections over HTTP (API + search page)",
        description="Serve one or more collections: JSON API under /v1, OpenAPI at /docs, "
        "a search page at /. Set TWOFOLD_API_KEY to require `Authorization: Bearer`.",
    )
    serve.add_argument("dirs", nargs="+", metavar="DIR", help="collection directories")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--reranker", help="cross-encoder directory (enables +rerank pipelines)")
    serve.add_argument("--default-pipeline", help="pipeline for requests naming none")
    serve.add_argument("--time-budget-ms", type=int, help="per-request time budget")
    serve.add_argument("--search-threads", type=int, help="threads running pipelines")
    serve.add_argument(
        "--torch-threads", type=int, help="torch intra-op threads (set once at start)"
    )
    serve.add_argument("--no-warmup", action="store_true", help="skip the warm-up queries")
    serve.add_argument(
        "--sparse-engine",
        choices=["native", "lucene", "seismic"],
        help="engine of the sparse/splade retrievers (default: the collection's build choice)",
    )
    serve.set_defaults(func=_serve)

    tune = sub.add_parser(
        "tune-fusion",
        help="pick hybrid fusion weights on labelled queries; write them to the manifest",
        description="Grid-search RRF and convex-combination weights for `hybrid` on a BEIR "
        "split (nDCG@10), and record the best in the collection's manifest (atomic rewrite).",
    )
    tune.add_argument("dir", help="collection directory")
    tune.add_argument("--dataset", help="BEIR dataset directory (its judged queries)")
    tune.add_argument(
        "--queries",
        choices=["split", "pseudo"],
        default="split",
        help="split: the judged queries of --dataset/--split (default). pseudo is refused, "
        "with the measured reason: pseudo-queries favour lexical retrievers",
    )
    tune.add_argument("--split", default="train")
    tune.add_argument("--max-queries", type=int, default=None)
    tune.add_argument("--step", type=float, default=0.1, help="weight grid step (default 0.1)")
    tune.add_argument("--dry-run", action="store_true", help="report, do not write")
    tune.set_defaults(func=_tune_fusion)
