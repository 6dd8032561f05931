"""CLI subcommands ``twofold train reranker`` and ``twofold train sparse``.

* ``train reranker``: Margin-MSE distillation of a cross-encoder; the work is in
  :mod:`twofold.train.distill` (examples) and :mod:`twofold.train.reranker`
  (the loop).
* ``train sparse``: the inference-free sparse document encoder, IDF-aware FLOPS plus
  heterogeneous ensemble KL distillation; the work is in
  :mod:`twofold.train.distill_sparse` (groups, idf) and
  :mod:`twofold.train.sparse` (the loop).

Thin wrappers. ``add_train_commands`` is called by ``twofold.app.cli.build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from twofold.core.errors import InputError

if TYPE_CHECKING:
    from twofold.indexing.collection import Collection
    from twofold.indexing.corpus import BeirDataset


def _out(text: str) -> None:
    """CLI output (stdout); library code logs instead."""
    sys.stdout.write(text + "\n")


def _names(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of retriever names")
    return items


def _given(**kwargs: object) -> dict[str, object]:
    """The flags given: left out, they keep the config dataclass's defaults (one place)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _inputs(args: argparse.Namespace) -> tuple[Collection, BeirDataset]:
    """The teachers' collection and the BEIR dataset the flags name."""
    from twofold.indexing.collection import Collection
    from twofold.indexing.corpus import BeirDataset

    dataset = Path(args.dataset)
    if not dataset.is_dir():
        raise InputError(f"--dataset {dataset} is not a directory")
    return Collection(Path(args.dir)), BeirDataset(dataset)


def _default_loss(queries: str) -> str:
    """LCE where every query has a known positive (labels or a pseudo-query's source),
    Margin-MSE for a plain file of queries, which has only the teacher's order."""
    return "lce" if queries in ("split", "pseudo", "split+pseudo") else "margin-mse"


def _train_reranker(args: argparse.Namespace) -> int:
    from twofold.indexing.collection import Collection
    from twofold.train.distill import DistillConfig, distill_reranker
    from twofold.train.queries import PseudoConfig, load_queries
    from twofold.train.reranker import RerankerTrainConfig

    distill = DistillConfig(
        **_given(  # type: ignore[arg-type]
            teachers=args.teachers,
            depth=args.depth,
            negatives=args.negatives,
            hard=args.hard_negatives,
            prior_negatives=args.prior_negatives,
            max_queries=args.max_queries,
            scale=args.teacher_scale,
            anchor=args.anchor,
            holdout=args.holdout,
            alpha_folds=args.alpha_folds,
            alpha=args.alpha,
            rerank_depth=args.rerank_depth,
            seed=args.seed,
        )
    )
    train = RerankerTrainConfig(
        **_given(  # type: ignore[arg-type]
            base=args.base,
            layers=args.layers,
            int8=args.int8 or None,
            loss=args.loss or _default_loss(args.queries),
            kl_weight=args.kl_weight,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            max_length=args.max_length,
            device=args.device,
            precision=args.precision,
            seed=args.seed,
        )
    )
    dataset = Path(args.dataset) if args.dataset else None
    if dataset is not None and not dataset.is_dir():
        raise InputError(f"--dataset {dataset} is not a directory")
    collection = Collection(Path(args.dir))
    pseudo = PseudoConfig(**_given(count=args.pseudo_count, seed=args.seed))  # type: ignore[arg-type]
    queries = load_queries(args.queries, collection, dataset, args.split, pseudo)
    describe = {"queries": args.queries, "dataset": str(dataset) if dataset else None}
    if args.queries.startswith("split"):
        describe["split"] = args.split
    from twofold.app.cli_optimize import step_progress

    with step_progress("train reranker", args.quiet) as step:
        result = distill_reranker(
            collection, queries, Path(args.out), distill, train, describe, on_step=step
        )
    summary = {
        "out": str(result.out),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "first_loss": round(result.losses[0], 4),
        "final_loss": round(result.final_loss, 4),
    }
    _out(json.dumps(summary))
    return 0


def _train_sparse(args: argparse.Namespace) -> int:
    from twofold.train.distill_sparse import SparseDistillConfig, distill_sparse
    from twofold.train.sparse import SparseTrainConfig

    distill = SparseDistillConfig(
        **_given(  # type: ignore[arg-type]
            teachers=args.teachers,
            depth=args.depth,
            group_size=args.group_size,
            max_queries=args.max_queries,
            scale=args.teacher_scale,
        )
    )
    train = SparseTrainConfig(
        **_given(  # type: ignore[arg-type]
            base=args.base,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            max_length=args.max_length,
            lambda_max=args.flops_lambda,
            warmup_steps=args.warmup_steps,
            device=args.device,
            precision=args.precision,
            seed=args.seed,
        )
    )
    collection, dataset = _inputs(args)
    result = distill_sparse(
        collection,
        dataset,
        args.split,
        Path(args.out),
        distill,
        train,
        progress=not args.quiet,
    )
    summary = {
        "out": str(result.out),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "first_kl": round(result.kl[0], 4),
        "final_kl": round(result.final_kl, 4),
        "first_active_terms": round(result.active[0], 1),
        "final_active_terms": round(result.final_active, 1),
    }
    _out(json.dumps(summary))
    return 0


def _add_job_flags(p: argparse.ArgumentParser, base_help: str) -> None:
    """The flags both trainers take before their own: inputs, output, student, teachers."""
    p.add_argument("dir", help="collection directory (with the teachers' indexes)")
    p.add_argument("--dataset", required=True, help="BEIR dataset directory")
    p.add_argument("--split", default="train", help="qrels split of the training queries")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--base", help=base_help)
    p.add_argument(
        "--teachers", type=_names, help="teacher retrievers, comma list (bm25,dense,splade)"
    )
    p.add_argument("--max-queries", type=int, help="use only the first N judged queries")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    from twofold.app.cli_optimize import add_device_flags

    add_device_flags(p)
    p.add_argument("--seed", type=int, help="(0)")


def add_train_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``train reranker`` and ``train sparse``."""
    train = sub.add_parser("train", help="train models").add_subparsers(
        dest="action", required=True
    )
    p = train.add_parser(
        "reranker",
        help="distil a cross-encoder reranker from the fused retrievers",
        description="Trains a cross-encoder (default: BERT-tiny, 4.4M parameters) from the "
        "collection's fused, anchored retrievers, with LCE (arXiv 2101.08751) where queries "
        "have known positives and Margin-MSE (arXiv 2010.02666) otherwise, on training "
        "queries from a BEIR split, "
        "pseudo-queries (no labels) or a file of queries. The weight of its score against "
        "the fused score is tuned on held-out training queries and stored with the model. "
        "Writes a model directory for `twofold eval --reranker DIR`.",
    )
    p.add_argument("dir", help="collection directory (with the teachers' indexes)")
    p.add_argument(
        "--queries",
        default="split",
        help="training queries: split (a BEIR split, needs --dataset), pseudo (from the "
        "corpus, no labels), split+pseudo (both; only split queries are held out) or a FILE "
        "of queries (default split)",
    )
    p.add_argument("--dataset", help="BEIR dataset directory (for --queries split)")
    p.add_argument("--split", default="train", help="qrels split of the training queries")
    p.add_argument("--pseudo-count", type=int, help="pseudo-queries to make (800)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument(
        "--base", help="student: splade-tiny (its BERT-tiny), minilm-l6 or a dir (splade-tiny)"
    )
    p.add_argument("--layers", type=int, help="keep the student's first N encoder layers (all)")
    p.add_argument("--int8", action="store_true", help="serve with dynamic int8 quantization")
    p.add_argument("--teachers", type=_names, help="teacher retrievers (all of the collection)")
    p.add_argument("--max-queries", type=int, help="train on at most N queries")
    p.add_argument(
        "--loss",
        choices=["margin-mse", "lce"],
        help="margin-mse: match the teacher's margins (any queries); lce: softmax "
        "cross-entropy of the known positive against its hard negatives, arXiv 2101.08751 "
        "(needs labels or pseudo-queries) (lce for split/pseudo queries, margin-mse for a file)",
    )
    p.add_argument("--kl-weight", type=float, help="lce: weight of the teacher KL (0)")
    p.add_argument("--negatives", type=int, help="negatives per positive (6)")
    p.add_argument("--hard-negatives", type=int, help="of which the best-ranked (3)")
    p.add_argument(
        "--prior-negatives",
        type=int,
        help="lce: also this many positives of other training queries as negatives per "
        "group, so that having been a training positive is no sign of relevance (0)",
    )
    p.add_argument("--depth", type=int, help="fused teacher candidates per query (100)")
    p.add_argument("--teacher-scale", type=float, help="multiplier of teacher scores (10)")
    p.add_argument("--anchor", type=float, help="positives above the best candidate (0.1)")
    p.add_argument("--holdout", type=float, help="fraction of queries held out for alpha (0.15)")
    p.add_argument(
        "--alpha-folds",
        type=int,
        help="K >= 2: tune alpha out-of-fold over K folds of all labelled queries and train "
        "the kept student on all of them (about K times the training time); 1: one "
        "--holdout split (1)",
    )
    p.add_argument("--alpha", type=float, help="fixed interpolation weight (default: tuned)")
    p.add_argument("--rerank-depth", type=int, help="candidates reranked when tuning (50)")
    p.add_argument("--epochs", type=int, help="passes over the examples (1)")
    p.add_argument("--batch-size", type=int, help="triples (lce: groups) per step (16)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (1e-4)")
    p.add_argument("--max-length", type=int, help="tokens per (query, doc) pair (256)")
    _add_run_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_reranker)

    p = train.add_parser(
        "sparse",
        help="train the inference-free sparse doc encoder (IDF-aware FLOPS + distillation)",
        description="Trains a masked-LM document encoder for the inference-free sparse "
        "retriever (arXiv 2411.04403): KL distillation from an ensemble of the collection's "
        "retrievers (each min-max normalized per query, averaged, times 30) over a group of "
        "documents per judged query of a BEIR split, plus IDF-aware FLOPS with a quadratic "
        "warm-up. Writes a model directory (with idf.json) for "
        "`twofold index build --retrievers sparse --sparse-model DIR`.",
    )
    _add_job_flags(p, "student's initial MLM: model name or dir (splade-tiny)")
    p.add_argument("--depth", type=int, help="hits per teacher (50)")
    p.add_argument("--group-size", type=int, help="documents per query in the KL (8)")
    p.add_argument("--teacher-scale", type=float, help="multiplier of teacher scores (30)")
    p.add_argument("--flops-lambda", type=float, help="FLOPS weight after warm-up (0.001)")
    p.add_argument("--warmup-steps", type=int, help="steps of the quadratic lambda warm-up (20)")
    p.add_argument("--epochs", type=int, help="passes over the queries (1)")
    p.add_argument("--batch-size", type=int, help="queries per step (4)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (1e-4)")
    p.add_argument("--max-length", type=int, help="tokens per document while training (256)")
    _add_run_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_sparse)
    from twofold.app.cli_dense import add_dense_command
    from twofold.app.cli_optimize import add_adapter_command

    add_adapter_command(train)
    add_dense_command(train)
