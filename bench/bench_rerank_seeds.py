"""`twofold train reranker` over several seeds on one collection, then `hybrid` against
`hybrid+rerank` on a test split: the check of a reranker recipe on a collection kept
apart from the one it was chosen on (issue 10: "every quality claim is also checked on
other public test collections").

Per seed: `twofold train reranker DIR --queries Q --seed S RECIPE...` (the recipe: every
flag after ``--``), then `twofold eval` of both pipelines. With ``--queries pseudo`` the
qrels are read only by that final eval, so the run is label-free. A seed whose reranker
and eval file are already in ``--work`` is read back, not trained again.

    python bench/bench_rerank_seeds.py build/cran --dataset ../shared/datasets/cranfield \\
        --work build/rr-cran --queries pseudo --seeds 0,1,2 \\
        --out bench/results/rerank-seeds-cranfield-pseudo-prior.json -- \\
        --pseudo-count 1200 --epochs 2 --lr 1e-4 --prior-negatives 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import evaluated, provenance, trained_reranker, write_report

PIPELINES = ("hybrid", "hybrid+rerank")
# the BERT-tiny LCE recipe of bench_train_dense (session 5); the flags after -- add to it
BASE_RECIPE = (
    "--base=splade-tiny", "--loss=lce", "--negatives=7", "--hard-negatives=3",
    "--batch-size=16",
)  # fmt: skip


def seed_run(args: argparse.Namespace, seed: int, recipe: list[str]) -> dict[str, Any]:
    model, out = args.work / f"rr-s{seed}", args.work / f"eval-rr-s{seed}.json"
    labels = ["--dataset", str(args.dataset)] if args.queries != "pseudo" else []
    flags = ["--queries", args.queries, *labels, *recipe, "--seed", str(seed)]
    trained = trained_reranker(args.collection, model, flags)
    limit = ["--max-queries", str(args.max_queries)] if args.max_queries else []
    extra = [*limit, "--reranker", str(model)]
    test = evaluated(args.collection, args.dataset, args.split, out, PIPELINES, *extra)
    return {"seed": seed, **trained, "test": test}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("collection", type=Path)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--split", default="test", help="split evaluated after training")
    ap.add_argument("--queries", default="pseudo", help="`train reranker --queries` (pseudo)")
    ap.add_argument("--work", type=Path, required=True, help="folder for models and evals")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-queries", type=int, help="evaluate only the first N (all)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.work.mkdir(parents=True, exist_ok=True)
    recipe = [*BASE_RECIPE, *extra]
    report: dict[str, Any] = {**provenance(), "collection": str(args.collection)}
    report |= {"queries": args.queries, "recipe": " ".join(recipe), "runs": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        report["runs"].append(seed_run(args, seed, recipe))
        write_report(report, args.out)  # after every seed: nothing lost on a crash


if __name__ == "__main__":
    main()
