"""Peak memory (RSS) of ``twofold index build --retrievers dense`` at two corpus sizes.

Writes synthetic corpora (``--sizes``, fixed ``--seed``: short texts of 2-8 words drawn
from a 2,000-word vocabulary) and, unless ``--model`` is given, a random one-layer BERT
with hidden size 384 in the sentence-transformers layout, so vectors have minilm-l6's
size (1,536 bytes per document) while encoding stays cheap: the claim under test is
about the build pipeline (vectors streamed to memory-mapped shards on disk), not the
model. Each build runs in its own process; its peak RSS comes from ``os.wait4``.

    .venv/bin/python bench/bench_dense_memory.py --sizes 20000,200000 --workdir build/bench-mem
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import provenance


def write_corpus(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(2000)]
    with path.open("w") as fh:
        for i in range(n):
            words = rng.choice(vocab, size=int(rng.integers(2, 9)))
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": " ".join(words)}) + "\n")


def write_model(directory: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(2000))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=384,
        num_hidden_layers=1,
        num_attention_heads=6,
        intermediate_size=384,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(directory)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True})
    )


def build(corpus: Path, out: Path, model: str, index: str) -> dict[str, float]:
    cmd = [
        str(Path(sys.executable).parent / "twofold"),
        "index",
        "build",
        str(corpus),
        "--out",
        str(out),
        "--retrievers",
        "dense",
        "--dense-model",
        model,
        "--dense-index",
        index,
        "--batch-size",
        "64",
        "--quiet",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed: {' '.join(cmd)}")
    vectors = out / "dense" / "vectors.npy"
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "vectors_mb": round(vectors.stat().st_size / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="20000,200000")
    p.add_argument("--workdir", type=Path, default=Path("build/bench-dense-memory"))
    p.add_argument("--model", default=None, help="dense model (default: random 384-d BERT)")
    p.add_argument("--index", default="flat", choices=["flat", "hnsw", "ivfpq", "auto"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        model = str(args.workdir / "tiny-384")
        write_model(Path(model))
    results: dict[str, object] = {
        "benchmark": "dense-memory",
        **provenance(),
        "model": model,
        "index": args.index,
        "seed": args.seed,
    }
    for n in (int(s) for s in args.sizes.split(",")):
        corpus = args.workdir / f"corpus-{n}.jsonl"
        if not corpus.is_file():
            write_corpus(corpus, n, args.seed)
        out = args.workdir / f"col-{n}"
        shutil.rmtree(out, ignore_errors=True)
        results[str(n)] = build(corpus, out, model, args.index)
        print(n, results[str(n)], file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
