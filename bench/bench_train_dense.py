"""Fine-tune the collection's bi-encoder once per seed and measure it inside the collection.

Per seed: ``twofold train dense``'s trainer (:func:`twofold.train.dense.train_dense`) on a
labelled split, then a hard-linked copy of the collection with only its dense sub-index
rebuilt from the student (the trainer's own corpus encoding is reused, as ``twofold
optimize``'s dense step does), then ``twofold eval`` of ``dense`` and ``hybrid`` on the
test split (all queries and the unseen-document ones). It is the same as
``twofold train dense`` + ``twofold index build --dense-model`` + ``twofold eval``, with
the corpus encoded once per seed instead of twice and the other sub-indexes not rebuilt.

With ``--rerank``, each seed's copy also gets ``twofold train reranker`` (RERANK_RECIPE,
on the same training split) and ``twofold eval`` of ``hybrid`` against
``hybrid+rerank``. A seed whose outputs are in ``--work`` already (a published copy and
its eval file, a reranker and its eval file) is read back, not trained again: an
interrupted run resumes where it stopped.

    python bench/bench_train_dense.py build/scifact --dataset ../shared/datasets/scifact \\
        --work build/train-dense --seeds 0,1,2 --kl-weight 1 --epochs 2 --rerank \\
        --out bench/results/train-dense-scifact.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import evaluated, provenance, trained_reranker, write_report
from twofold.indexing.collection import Collection
from twofold.indexing.dense.shards import ReuseVectors
from twofold.indexing.encoding import LocalExecutor
from twofold.indexing.rebuild import publish_rebuild, stage_rebuild
from twofold.train.dense import DenseTrainConfig, train_dense
from twofold.train.queries import PseudoConfig, load_queries

PIPELINES = ("dense", "hybrid")
RERANK_PIPELINES = ("hybrid", "hybrid+rerank")
# session 5's recipe (BERT-tiny, LCE); --rerank-alpha adds --alpha (default 0.25, the
# best of session 6's out-of-fold curve over the 809 train queries, 0.05-0.25 within
# 0.002 there) or, with "tuned", leaves alpha to the trainer's held-out queries
RERANK_RECIPE = (
    "--base=splade-tiny", "--loss=lce", "--negatives=7", "--hard-negatives=3",
    "--batch-size=16", "--epochs=4", "--lr=1e-4",
)  # fmt: skip


def rerank_recipe(alpha: str, extra: str = "") -> tuple[str, ...]:
    """RERANK_RECIPE with ``alpha`` ("tuned" or a number) and ``extra`` (more flags of
    `twofold train reranker`, space-separated, e.g. "--prior-negatives=2")."""
    fixed = () if alpha == "tuned" else (f"--alpha={float(alpha)}",)
    return (*RERANK_RECIPE, *fixed, *extra.split())


def evaluate(
    collection: Path, args: argparse.Namespace, out: Path, pipelines: tuple[str, ...], *extra: str
) -> dict[str, Any]:
    """``twofold eval`` on ``--split`` (skipped when ``out`` exists)."""
    return evaluated(collection, args.dataset, args.split, out, pipelines, *extra)


def dense_stage(args: argparse.Namespace, seed: int) -> tuple[Path, dict[str, Any]]:
    """Train (unless a published copy is there), rebuild a copy's dense sub-index."""
    model, copy = args.work / f"model-s{seed}", args.work / f"collection-s{seed}"
    if not ((copy / "manifest.json").is_file() and (model / "training_args.json").is_file()):
        base = Collection(args.collection)
        pseudo = PseudoConfig(seed=seed)
        queries = load_queries("split", base, args.dataset, args.train_split, pseudo)
        config = DenseTrainConfig(
            epochs=args.epochs,
            kl_weight=args.kl_weight,
            lr=args.lr,
            seed=seed,
            precision=args.precision,
        )
        shutil.rmtree(model, ignore_errors=True)
        describe = {"queries": "split", "dataset": str(args.dataset), "split": args.train_split}
        trained = train_dense(base, queries, model, config, describe)
        shutil.rmtree(copy, ignore_errors=True)
        # hard links: nothing in a published collection is written in place
        subprocess.run(["cp", "-al", str(args.collection.resolve()), str(copy)], check=True)
        executor = None
        if trained.doc_vectors is not None:
            local = LocalExecutor("cpu", False)
            executor = ReuseVectors(local, trained.doc_vectors, trained.doc_encoding)
        stage_rebuild(copy, "dense", {"model": str(model)}, False, executor)
        publish_rebuild(copy)
    card = json.loads((model / "training_args.json").read_text())
    metrics = card["metrics"]
    return copy, {
        "steps": card["steps"],
        "kl_weight": card["kl_weight"],
        "heldout_dense": [
            metrics["heldout_ndcg@10_collection_dense"],
            metrics["heldout_ndcg@10_student"],
        ],
        "train_seconds": card["seconds"],
        "test": evaluate(copy, args, args.work / f"eval-s{seed}.json", PIPELINES),
    }


def rerank_stage(args: argparse.Namespace, seed: int, copy: Path) -> dict[str, Any]:
    model = args.work / f"rr-s{seed}"
    flags = ["--queries", "split", "--dataset", str(args.dataset), "--split", args.train_split]
    flags += [*rerank_recipe(args.rerank_alpha, args.rerank_extra), "--seed", str(seed)]
    trained = trained_reranker(copy, model, flags)
    out = args.work / f"eval-rr-s{seed}.json"
    return {
        **{k: trained[k] for k in ("steps", "alpha", "heldout")},
        "test": evaluate(copy, args, out, RERANK_PIPELINES, "--reranker", str(model)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("collection", type=Path)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--split", default="test", help="split evaluated after training")
    ap.add_argument("--work", type=Path, required=True, help="folder for models and copies")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--kl-weight", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="of the training loop (`twofold train dense --precision`; default auto)",
    )
    ap.add_argument("--rerank", action="store_true", help="also train and eval a reranker")
    ap.add_argument(
        "--rerank-alpha", default="0.25", help="the reranker's fixed alpha, or 'tuned' (0.25)"
    )
    ap.add_argument(
        "--rerank-extra",
        default="",
        help="more `twofold train reranker` flags, e.g. '--prior-negatives=2' (none)",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {**provenance(), "collection": str(args.collection), "runs": []}
    report["precision"] = args.precision
    recipe = rerank_recipe(args.rerank_alpha, args.rerank_extra)
    report["rerank_recipe"] = " ".join(recipe) if args.rerank else None
    report["untrained"] = evaluate(args.collection, args, args.work / "eval-base.json", PIPELINES)
    for seed in (int(s) for s in args.seeds.split(",")):
        copy, dense = dense_stage(args, seed)
        run = {"seed": seed, "dense": dense}
        if args.rerank:
            run["rerank"] = rerank_stage(args, seed, copy)
        report["runs"].append(run)
        write_report(report, args.out)  # after every seed: nothing lost on a crash


if __name__ == "__main__":
    main()
