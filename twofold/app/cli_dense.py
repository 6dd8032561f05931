"""CLI subcommand ``twofold train dense``: a thin wrapper over :mod:`twofold.train.dense`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from twofold.app.cli_optimize import (
    add_device_flags,
    add_query_flags,
    load_training_queries,
    step_progress,
)
from twofold.core.errors import InputError


def _train_dense(args: argparse.Namespace) -> int:
    from twofold.indexing.collection import Collection
    from twofold.train.dense import DenseTrainConfig, train_dense

    given = {k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None}
    config = DenseTrainConfig(seed=args.seed, **given)  # type: ignore[arg-type]
    collection = Collection(Path(args.dir))
    if not collection.has("dense"):
        raise InputError(f"collection {collection.name!r} has no dense index to start from")
    source, queries = load_training_queries(args, collection)
    describe = {"queries": source, "dataset": args.dataset, "split": args.split}
    with step_progress("train dense", args.quiet) as step:
        result = train_dense(collection, queries, Path(args.out), config, describe, step)
    summary = {
        "out": str(result.out),
        "steps": result.steps,
        "train_queries": result.train_queries,
        "heldout_queries": result.heldout_queries,
        "heldout_ndcg@10_collection_dense": round(result.heldout_base, 4),
        "heldout_ndcg@10_student": round(result.heldout_trained, 4),
        "kept": result.kept,
        "seconds": round(result.seconds, 1),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


FIELDS = (
    "base",
    "epochs",
    "batch_size",
    "lr",
    "max_length",
    "query_length",
    "negatives",
    "skip",
    "pool",
    "tau",
    "kl_weight",
    "holdout",
    "device",
    "precision",
)


def add_dense_command(train: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = train.add_parser(
        "dense",
        help="fine-tune the dense bi-encoder on the collection's training queries",
        description="Fine-tunes a bi-encoder with InfoNCE over in-batch and hard negatives "
        "mined by the collection's fused retrievers, plus an optional KL to their fused "
        "scores (ensemble distillation). Part of the queries is held out (none sharing a "
        "positive with a training query): the model card reports held-out nDCG@10 of the "
        "student against the collection's dense vectors. Writes a model directory for "
        "`twofold index build --dense-model DIR`.",
    )
    p.add_argument("dir", help="collection directory (with a dense index and the teachers)")
    add_query_flags(p)
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--base", help="initial bi-encoder: name or directory (minilm-l6)")
    p.add_argument("--epochs", type=int, help="passes over the pairs (1)")
    p.add_argument("--batch-size", type=int, help="pairs per step (16)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (2e-5)")
    p.add_argument("--max-length", type=int, help="document tokens (256)")
    p.add_argument("--query-length", type=int, help="query tokens (64)")
    p.add_argument("--negatives", type=int, help="hard negatives per pair (2)")
    p.add_argument("--skip", type=int, help="teacher ranks skipped as likely false negatives (2)")
    p.add_argument("--pool", type=int, help="teacher ranks the negatives are drawn from (30)")
    p.add_argument("--tau", type=float, help="InfoNCE temperature (0.05)")
    p.add_argument("--kl-weight", type=float, help="weight of the teacher KL (0)")
    p.add_argument("--holdout", type=float, help="fraction of queries held out (0.2)")
    add_device_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_dense)
