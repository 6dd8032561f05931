"""CLI subcommands ``twofold train adapter`` and ``twofold optimize``: thin wrappers over
:mod:`twofold.train.adapter` and :mod:`twofold.train.optimize`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twofold.core.errors import InputError


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


@contextmanager
def step_progress(desc: str, quiet: bool) -> Iterator[Callable[[int, float], None]]:
    """A trainer's ``on_step(step, loss)`` that advances a progress bar showing the loss."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="step", disable=quiet)

    def step(_step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    try:
        yield step
    finally:
        bar.close()


def add_device_flags(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision`` of a trainer (choices from the loop's own lists)."""
    from twofold.models.device import DEVICES, PRECISIONS

    p.add_argument("--device", choices=DEVICES, help="(auto)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: bfloat16 autocast on CUDA, float32 on the CPU (auto)",
    )


def add_query_flags(p: argparse.ArgumentParser) -> None:
    """``--queries split|pseudo|FILE`` with ``--dataset``/``--split`` and the pseudo-query
    count: where training queries come from."""
    p.add_argument(
        "--queries",
        default=None,
        help="training queries: 'split' (a BEIR split's judged queries; needs --dataset), "
        "'pseudo' (inverse-cloze sentences of the corpus, no labels), 'split+pseudo' (both; "
        "only split queries are held out) or a file of queries "
        "(one per line or {_id,text} JSON lines, no labels); default: split with --dataset, "
        "else pseudo",
    )
    p.add_argument("--dataset", help="BEIR dataset directory (for --queries split)")
    p.add_argument("--split", default="train", help="qrels split for --queries split (train)")
    p.add_argument("--pseudo-count", type=int, default=800, help="pseudo-queries to make (800)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")


def load_training_queries(args: argparse.Namespace, collection: Any) -> tuple[str, list[Any]]:
    from twofold.train.queries import PseudoConfig, load_queries

    source = args.queries or ("split" if args.dataset else "pseudo")
    dataset = Path(args.dataset) if args.dataset else None
    if dataset is not None and not dataset.is_dir():
        raise InputError(f"--dataset {dataset} is not a directory")
    pseudo = PseudoConfig(count=args.pseudo_count, seed=args.seed)
    return source, load_queries(source, collection, dataset, args.split, pseudo)


def _train_adapter(args: argparse.Namespace) -> int:
    from twofold.indexing.collection import Collection
    from twofold.train.adapter import AdapterConfig, train_adapter

    config = AdapterConfig(
        variant=args.variant,
        rank=args.rank,
        epochs=args.epochs,
        l2=args.l2,
        lr=args.lr,
        seed=args.seed,
    )
    collection = Collection(Path(args.dir))
    if not collection.has("dense"):
        raise InputError(f"collection {collection.name!r} has no dense index to adapt")
    source, queries = load_training_queries(args, collection)
    record = {"data": f"{source} ({args.dataset or collection.path}, {args.split})"}
    result = train_adapter(collection, queries, config, write=not args.dry_run, record=record)
    _out(
        json.dumps(
            {
                "variant": args.variant,
                "rank": args.rank,
                "train_queries": result.train_queries,
                "heldout_queries": result.heldout_queries,
                "heldout_ndcg@10_plain": round(result.baseline, 4),
                "heldout_ndcg@10_adapted": round(result.best, 4),
                "best_epoch": result.best_epoch,
                "kept": result.kept,
                "written": result.kept and not args.dry_run,
                "seconds": round(result.seconds, 1),
            }
        )
    )
    return 0


def add_adapter_command(train: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = train.add_parser(
        "adapter",
        help="train a low-rank query adapter over the dense embeddings (seconds)",
        description="Adapted Dense Retrieval (arXiv 2310.05380): a residual map e + B(A e) of "
        "rank r over the collection's frozen embeddings, trained with InfoNCE against hard "
        "negatives of the fused retrievers. Part of the queries is held out (none sharing a "
        "positive with a training query); the best epoch there is kept, and the adapter is "
        "written into COLLECTION/adapter only if it beats the plain embeddings. `dense` (and "
        "so `hybrid`) uses it from then on; delete the folder to go back.",
    )
    p.add_argument("dir", help="collection directory (with a dense index)")
    add_query_flags(p)
    p.add_argument("--variant", choices=["query", "both"], default="query")
    p.add_argument("--rank", type=int, default=16, help="rank r of the map (16)")
    p.add_argument("--epochs", type=int, default=40, help="at most this many epochs (40)")
    p.add_argument("--l2", type=float, default=0.1, help="weight of ||BA||^2 (0.1)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (2e-3)")
    p.add_argument("--dry-run", action="store_true", help="train and report, write nothing")
    p.set_defaults(func=_train_adapter)


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return number


def _optimize(args: argparse.Namespace) -> int:
    from twofold.train.optimize import STEPS, OptimizeJob, optimize

    steps = tuple(s.strip() for s in (args.steps or ",".join(STEPS)).split(",") if s.strip())
    source = args.queries or ("split" if args.dataset else "pseudo")
    job = OptimizeJob(
        collection=Path(args.dir),
        source=source,
        dataset=Path(args.dataset) if args.dataset else None,
        split=args.split,
        steps=steps,
        seed=args.seed,
        pseudo_count=args.pseudo_count,
        significance=args.significance,
        dense_epochs=args.dense_epochs,
        progress=sys.stderr.isatty(),
    )
    report = optimize(job)
    _out(report.table())
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


def add_optimize_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "optimize",
        help="run the training steps that pay (dense, fusion, adapter, reranker), held-out checked",
        description="Splits the training queries into tuning and held-out parts (no held-out "
        "query shares a positive with a tuning one), then runs each step: the dense encoder "
        "fine-tuned and the corpus re-encoded with it (the other sub-indexes are reused), "
        "fusion weights for `hybrid`, a dense query adapter, a distilled reranker for "
        "`hybrid+rerank`. A step is "
        "kept only if held-out nDCG@10 improves beyond chance (a paired randomization test, "
        "p < --significance); what is kept is written into the collection, "
        "so `twofold eval|search|serve DIR` use it with no extra flags. With --queries pseudo "
        "no label is read.",
    )
    p.add_argument("dir", help="collection directory")
    add_query_flags(p)
    p.add_argument(
        "--steps",
        help="comma list of steps to try, in this order (default all: "
        "dense,fusion,adapter,reranker); the dense step takes longest: it re-encodes the corpus",
    )
    p.add_argument(
        "--dense-epochs",
        type=int,
        default=2,
        help="epochs of the dense step's fine-tuning (default 2)",
    )
    p.add_argument(
        "--significance",
        type=_fraction,
        default=0.05,
        help="keep a step only if its held-out gain has a paired randomization p-value "
        "below this (default 0.05; 1 keeps any gain)",
    )
    p.add_argument("--out", help="write the report as JSON here")
    p.set_defaults(func=_optimize)
