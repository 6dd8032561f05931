"""GPU path of the dense index, checked against the CPU path (run where a GPU is lent).

Needs a CUDA build of torch and faiss-gpu-cu12 instead of faiss-cpu (requirements-gpu.txt).
1. encodes ``--docs`` SciFact documents with minilm-l6 on CPU and on CUDA: max abs
   difference of the vectors, docs/s of each;
2. builds IVF-PQ over ``--synthetic`` clustered vectors with ``build_faiss(gpu=False)``
   and ``gpu=True`` (train/add on GPU 0, stored as a CPU index): build seconds and
   recall@10 against exact flat search for each.

    .venv/bin/python bench/bench_dense_gpu.py --corpus ../shared/datasets/scifact \
        --out build/dense/gpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dense_hnsw import recall_at, synthetic

from twofold.indexing.corpus import read_corpus
from twofold.indexing.dense.index import build_faiss, faiss_gpus, index_params
from twofold.models.dense import DenseEncoder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--docs", type=int, default=2048)
    p.add_argument("--synthetic", type=int, default=200_000)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available() or faiss_gpus() == 0:
        raise SystemExit(
            f"needs a GPU in torch ({torch.cuda.is_available()}) and in FAISS ({faiss_gpus()})"
        )
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0)}
    texts = [d.contents for d in read_corpus(args.corpus, max_docs=args.docs)]
    vecs = {}
    for device, n in (("cpu", min(256, len(texts))), ("cuda", len(texts))):
        enc = DenseEncoder("minilm-l6", device=device, batch_size=128)
        enc.encode_docs(texts[:128])
        t0 = time.perf_counter()
        vecs[device] = enc.encode_docs(texts[:n])
        result[f"encode_{device}_docs_per_s"] = round(n / (time.perf_counter() - t0), 1)
    n_cpu = len(vecs["cpu"])
    result["encode_max_abs_diff"] = float(np.abs(vecs["cpu"] - vecs["cuda"][:n_cpu]).max())
    x = synthetic(args.synthetic, 384, 1000, 1.0, 0)
    q = synthetic(1000, 384, 1000, 1.0, 0, stream=1)
    _, exact = build_faiss(x, "flat", {}, gpu=False).search(q, 100)
    params = index_params("ivfpq", len(x), 384)
    result["ivfpq_params"] = params
    for gpu in (False, True):
        t0 = time.perf_counter()
        index = build_faiss(x, "ivfpq", params, gpu=gpu)
        seconds = time.perf_counter() - t0
        _, ids = index.search(q, 100)
        result["ivfpq_gpu" if gpu else "ivfpq_cpu"] = {
            "build_s": round(seconds, 1),
            "recall@10_vs_flat": round(recall_at(ids, exact, 10), 4),
        }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
