"""Encoding throughput of a dense encoder (docs/s) and its fraction of the fp32 matmul rate.

Encodes the first ``--docs`` documents of a corpus with ``DenseEncoder.encode_docs`` (the
build path: length-sorted batches, ``inference_mode``) and, in the same process and
before/after it, times a square fp32 ``torch.matmul``. The encoder's work is counted
for the padded batches it actually ran, per BERT layer and token of a batch padded to
length L: ``2 * (4 d^2 + 2 d d_ff)`` for the projections and feed-forward, plus
``4 L d`` for attention scores and the weighted sum (embeddings, norms and softmax
not counted).

    OPENBLAS_CORETYPE=SkylakeX .venv/bin/python bench/bench_dense_encode.py \
        --corpus ../shared/datasets/scifact --docs 512
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from twofold.indexing.corpus import read_corpus
from twofold.models.dense import DenseEncoder


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def encoder_flops(enc: DenseEncoder, texts: list[str]) -> tuple[float, int, int]:
    """(FLOPs of the padded batches, real tokens, padded tokens) for ``encode_docs``."""
    cfg = enc.model.config
    d, d_ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    lengths = sorted(enc.count_tokens([enc.doc_prefix + t for t in texts]), reverse=True)
    flops, padded = 0.0, 0
    for start in range(0, len(lengths), enc.batch_size):
        batch = lengths[start : start + enc.batch_size]
        seq = batch[0]
        tokens = seq * len(batch)
        padded += tokens
        flops += layers * tokens * (2 * (4 * d * d + 2 * d * d_ff) + 4 * seq * d)
    return flops, sum(lengths), padded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--docs", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    texts = [d.contents for d in read_corpus(args.corpus, max_docs=args.docs)]
    enc = DenseEncoder(args.model, batch_size=args.batch_size, max_length=args.max_length)
    enc.encode_docs(texts[: args.batch_size])  # warm-up
    before = matmul_gflops()
    t0 = time.perf_counter()
    vectors = enc.encode_docs(texts)
    seconds = time.perf_counter() - t0
    after = matmul_gflops()
    flops, real, padded = encoder_flops(enc, texts)
    peak = max(before, after)
    result = {
        "model": args.model,
        "docs": len(texts),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(texts) / seconds, 2),
        "tokens_per_doc": round(real / len(texts), 1),
        "padding_overhead": round(padded / real - 1, 4),
        "encoder_gflop_per_s": round(flops / seconds / 1e9, 1),
        "matmul_gflop_per_s": {"before": round(before, 1), "after": round(after, 1)},
        "fraction_of_matmul": round(flops / seconds / 1e9 / peak, 3),
        "unit_norm": bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
