"""Fine-tune the collection's bi-encoder once per seed and measure it inside the collection.

Per seed: ``twofold train dense``'s trainer (:func:`twofold.train.dense.train_dense`) on a
labelled split, then a hard-linked copy of the collection with only its dense sub-index
rebuilt from the student (the trainer's own corpus encoding is reused, as ``twofold
optimize``'s dense step does), then ``twofold eval`` of ``dense`` and ``hybrid`` on the
test split (all queries and the unseen-document ones). It is the same as
``twofold train dense`` + ``twofold index build --dense-model`` + ``twofold eval``, with
the corpus encoded once per seed instead of twice and the other sub-indexes not rebuilt.

    python bench/bench_train_dense.py build/scifact --dataset ../shared/datasets/scifact \\
        --work build/train-dense --seeds 0,1,2 --kl-weight 1 --epochs 2 \\
        --out bench/results/train-dense-kl1.json
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

from bench.common import provenance, write_report
from twofold.indexing.collection import Collection
from twofold.indexing.dense.shards import ReuseVectors
from twofold.indexing.encoding import LocalExecutor
from twofold.indexing.rebuild import publish_rebuild, stage_rebuild
from twofold.train.dense import DenseTrainConfig, train_dense
from twofold.train.queries import PseudoConfig, load_queries

PIPELINES = ("dense", "hybrid")


def evaluate(collection: Path, dataset: Path, split: str, out: Path) -> dict[str, Any]:
    """``twofold eval`` of PIPELINES: {pipeline: {all, unseen, p50_ms}}."""
    twofold = str(Path(sys.executable).parent / "twofold")
    cmd = [twofold, "eval", str(collection), "--dataset", str(dataset)]
    cmd += ["--split", split, "--pipeline", ",".join(PIPELINES), "--quiet", "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())["pipelines"]
    return {
        name: {
            "all": round(report[name]["ndcg@10"], 4),
            "unseen": round(report[name]["unseen_documents"]["ndcg@10"], 4),
            "p50_ms": report[name]["latency_ms"]["p50"],
        }
        for name in PIPELINES
    }


def one_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    base = Collection(args.collection)
    queries = load_queries("split", base, args.dataset, args.train_split, PseudoConfig(seed=seed))
    config = DenseTrainConfig(epochs=args.epochs, kl_weight=args.kl_weight, lr=args.lr, seed=seed)
    model = args.work / f"model-s{seed}"
    shutil.rmtree(model, ignore_errors=True)
    describe = {"queries": "split", "dataset": str(args.dataset), "split": args.train_split}
    trained = train_dense(base, queries, model, config, describe)
    copy = args.work / f"collection-s{seed}"
    shutil.rmtree(copy, ignore_errors=True)
    # hard links: nothing in a published collection is written in place
    subprocess.run(["cp", "-al", str(args.collection.resolve()), str(copy)], check=True)
    executor = None
    if trained.doc_vectors is not None:
        local = LocalExecutor("cpu", False)
        executor = ReuseVectors(local, trained.doc_vectors, trained.doc_encoding)
    stage_rebuild(copy, "dense", {"model": str(model)}, False, executor)
    publish_rebuild(copy)
    return {
        "seed": seed,
        "steps": trained.steps,
        "heldout_dense": [round(trained.heldout_base, 4), round(trained.heldout_trained, 4)],
        "train_seconds": round(trained.seconds, 1),
        "test": evaluate(copy, args.dataset, args.split, args.work / f"eval-s{seed}.json"),
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
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {**provenance(), "collection": str(args.collection), "runs": []}
    base_eval = args.work / "eval-base.json"
    report["untrained"] = evaluate(args.collection, args.dataset, args.split, base_eval)
    for seed in (int(s) for s in args.seeds.split(",")):
        report["runs"].append(one_seed(args, seed))
        write_report(report, args.out)  # after every seed: nothing lost on a crash


if __name__ == "__main__":
    main()
