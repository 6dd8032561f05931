"""Build a learned-sparse sub-index (inference-free ``sparse`` or siamese ``splade``).

Documents are encoded shard by shard (``shard_size`` docs, default 2048) into CSR
``.npz`` files written atomically: memory holds one shard, and a rerun after a crash
keeps every finished shard. Then the shards are merged into the postings, exported to
a Lucene impact index (weights ``round(w * scale)``), and removed.

The options are ``BuildOptions.sparse`` / ``BuildOptions.splade`` (``SparseOptions``:
pruning, quantization scale, shard size, engines, Seismic parameters, token budget and,
for the inference-free index, the query side's ``query_min_idf``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from twofold.core.errors import InputError
from twofold.core.types import Doc
from twofold.indexing.buildctx import BuildContext
from twofold.indexing.bundle import bundle_model
from twofold.indexing.sparse_index import (
    FORMAT_VERSION,
    iter_shards,
    shard_path,
    write_doc_ids,
    write_lucene,
    write_postings,
    write_shard,
    write_vocab,
)
from twofold.indexing.sparse_seismic import SeismicParams, build_seismic, default_engine

log = logging.getLogger(__name__)
PARAMS = "params.json"
ENGINE_INFO = {
    "native": "exact float32 dot product, numpy over memory-mapped CSC postings",
    "lucene": "Lucene top-k, Anserini JsonVectorCollection -impact -pretokenized",
    "seismic": "Seismic (pyseismic-lsr) pruned block search, candidates rescored exactly",
}
KINDS = {"sparse": "inference-free", "splade": "splade"}


def doc_text(doc: Doc) -> str:
    """What the encoders read of a document: ``title text`` (as BM25 does)."""
    return f"{doc.title} {doc.text}".strip()


def _params(ctx: BuildContext, prefix: str) -> dict[str, Any]:
    o = ctx.options.learned_sparse(prefix)
    engine = o.engine if o.engine is not None else default_engine(len(ctx.docs))
    built = o.built_engines
    if engine not in built:  # checked before encoding (preflight); kept for direct callers
        raise InputError(
            f"{prefix}: default engine {engine!r} is not among the built {built}; "
            "add it to --sparse-engines or choose another --sparse-engine"
        )
    from twofold.models.registry import model_fingerprint

    return {
        "kind": KINDS[prefix],
        "model": o.model,
        # the weights read, so that a resume never mixes shards of retrained weights
        "weights_sha256": model_fingerprint(o.model)["sha256"],
        "max_length": ctx.options.max_length,
        "top_k": o.top_k,
        "max_ratio": o.max_ratio,
        "scale": float(o.scale),
        "shard_size": o.shard_size,
        "engine": engine,
        "engines": built,
        "seismic": o.seismic.to_json(),
        "token_budget": o.token_budget,
        "doc_count": len(ctx.docs),
    }


def _prepare(out: Path, params: dict[str, Any]) -> None:
    """Keep finished shards only if they were made with the same parameters."""
    file = out / PARAMS
    if out.is_dir():
        try:
            same = json.loads(file.read_text()) == params
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:  # other parameters, or other weights under the same model name
            log.info("%s: finished shards were made otherwise; encoding again", out.name)
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(params, sort_keys=True))


def build_sparse(ctx: BuildContext, out: Path, prefix: str) -> dict[str, Any]:
    """Encode, shard, merge, export to Lucene; returns the manifest entry."""
    from twofold.models.echo import ECHO_AGAIN, ECHO_PREFIX, EchoSparseEncoder, load_sparse_encoder
    from twofold.models.registry import model_fingerprint
    from twofold.models.sparse import (
        Pruning,
        idf_from_df,
        model_idf,
        prune,
        special_ids,
        vocab_list,
    )

    params = _params(ctx, prefix)
    _prepare(out, params)
    pruning = Pruning(params["top_k"], params["max_ratio"])
    reused = _reuse_sparse_docs(out, params, model_fingerprint(params["model"]), pruning)
    if reused is not None:
        reused["model_files"] = bundle_model(params["model"], out)
        return reused
    if ctx.device == "cpu":
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    encoder = load_sparse_encoder(
        params["model"],
        device=ctx.device,
        max_length=params["max_length"],
        pruning=pruning,
        token_budget=params["token_budget"],
    )
    vocab = vocab_list(encoder.tokenizer)[: encoder.vocab_size]
    vocab += [f"[twofold-unused-{j}]" for j in range(len(vocab), encoder.vocab_size)]
    special = np.asarray(special_ids(encoder.tokenizer), dtype=np.int64)
    n, size = len(ctx.docs), params["shard_size"]
    n_shards = (n + size - 1) // size
    docs = ctx.progress(iter(ctx.docs), desc=f"{prefix}: encode", total=n)
    encode_seconds, encoded = 0.0, 0
    chunk = max(256, 8 * ctx.options.batch_size)  # length-sorted within a chunk
    for i in range(n_shards):
        target = shard_path(out, i)
        df_file = target.with_name(f"df-{i:05d}.npy")
        count = min(size, n - i * size)
        if target.is_file() and df_file.is_file():
            for _ in islice(docs, count):  # finished before an interruption
                pass
            continue
        t0 = time.perf_counter()
        df = np.zeros(encoder.vocab_size, dtype=np.int64)
        parts = []
        for s in range(0, count, chunk):
            batch = list(islice(docs, min(chunk, count - s)))
            ids = encoder.tokenize([doc_text(d) for d in batch], params["max_length"])
            for x in ids:
                df[np.unique(np.asarray(x, dtype=np.int64))] += 1
            parts.append(prune(encoder.encode_ids(ids, ctx.options.batch_size), pruning))
        df[special[special < encoder.vocab_size]] = 0
        encode_seconds += time.perf_counter() - t0
        encoded += count
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(df_file, df)  # before the shard: a shard on disk implies its df file
        write_shard(target, sp.vstack(parts, format="csr"))
    nnz = write_postings(out, n_shards, encoder.vocab_size)
    write_doc_ids(out, ctx.docs.ids)
    write_vocab(out, vocab)
    entry: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": params["kind"],
        "encoder": model_fingerprint(params["model"]),
        "max_length": params["max_length"],
        "activation": "log(1 + relu(max_i mask_i * logits_i)), special tokens zeroed",
        "pruning": pruning.to_json(),
        "quantization": {"scale": params["scale"], "rule": "round(w * scale), docs and queries"},
        "engines": params["engines"],
        "default_engine": params["engine"],
        "default_engine_rule": "the build's --sparse-engine, else native below "
        "50,000 documents and seismic from there on",
        "engine_info": {k: v for k, v in ENGINE_INFO.items() if k in params["engines"]},
        "vocab_size": encoder.vocab_size,
        "postings": nnz,
        "avg_terms_per_doc": round(nnz / max(n, 1), 2),
        "shard_size": size,
        "encode_docs_per_second": round(encoded / encode_seconds, 2) if encode_seconds else None,
        "device": ctx.device,
    }
    if isinstance(encoder, EchoSparseEncoder):
        entry["max_length"] = encoder.max_length  # one copy, capped so the echo fits
        entry["activation"] = (
            "echo (arXiv 2408.11119): the causal LM reads prefix + text + again + text; "
            "log(1 + relu(max over the second copy's tokens of logits)), special tokens zeroed"
        )
        entry["echo"] = {"prefix": ECHO_PREFIX, "again": ECHO_AGAIN}
    if params["kind"] == "inference-free":
        idf = model_idf(params["model"], encoder.tokenizer)
        source = "idf.json"
        if idf is None:
            df_total = np.zeros(encoder.vocab_size, dtype=np.int64)
            for i in range(n_shards):
                df_total += np.load(shard_path(out, i).with_name(f"df-{i:05d}.npy"))
            idf, source = idf_from_df(df_total, n), "collection"
        padded = np.zeros(encoder.vocab_size, dtype=np.float32)
        padded[: min(len(idf), encoder.vocab_size)] = idf[: encoder.vocab_size]
        np.save(out / "idf.npy", padded)
        encoder.tokenizer.save_pretrained(str(out / "tokenizer"))
        entry["query_encoder"] = "idf: q_j = 1[j in tokens(q)] * relu(idf_j), no model"
        # query-side pruning (q_j = 0 where idf_j < query_min_idf); not a document
        # parameter, so not in PARAMS: changing it keeps finished shards
        entry["query_min_idf"] = float(ctx.options.sparse.query_min_idf)
        entry["idf"] = {
            "source": source,
            "formula": None if source == "idf.json" else "log(1 + (N - df + 0.5) / (df + 0.5))",
        }
    else:
        entry["query_encoder"] = "siamese: the document activation on the query"
        entry["query_max_length"] = params["max_length"]
        entry["model_files"] = bundle_model(params["model"], out)  # the query side loads it
    if "lucene" in params["engines"]:
        write_lucene(out, n_shards, ctx.docs.ids, vocab, params["scale"])
    if "seismic" in params["engines"]:
        t0 = time.perf_counter()
        seismic = SeismicParams.from_json(params["seismic"])
        entry["seismic"] = build_seismic(
            out, iter_shards(out, n_shards), encoder.vocab_size, seismic
        )
        entry["seismic"]["build_seconds"] = round(time.perf_counter() - t0, 2)
    shutil.rmtree(out / "shards")
    (out / PARAMS).unlink()
    return entry


def _reuse_sparse_docs(
    out: Path, params: dict[str, Any], fingerprint: dict[str, str], pruning: Any
) -> dict[str, Any] | None:
    """A ``splade`` index whose document side equals the sibling ``sparse`` index's (same
    model weights, max_length, pruning, scale) copies its postings and Lucene index
    instead of encoding the corpus again; returns the manifest entry, else ``None``."""
    from twofold.indexing.build import COMPLETE

    if params["kind"] != "splade":
        return None
    marker = out.parent / "sparse" / COMPLETE
    if not marker.is_file():
        return None
    other = json.loads(marker.read_text())
    same = (
        other.get("encoder") == fingerprint
        and fingerprint.get("sha256") != "unknown"
        and other.get("max_length") == params["max_length"]
        and other.get("pruning") == pruning.to_json()
        and other.get("quantization", {}).get("scale") == params["scale"]
    )
    if not same:
        return None
    src = out.parent / "sparse"
    if other.get("engines", ["native", "lucene"]) != params["engines"]:
        return None
    for name in ("postings", "forward", "lucene", "seismic"):
        if (src / name).is_dir():
            shutil.copytree(src / name, out / name, dirs_exist_ok=True)
    for name in ("doc_ids.txt", "vocab.txt"):
        shutil.copyfile(src / name, out / name)
    entry = {k: v for k, v in other.items() if k not in ("idf", "query_encoder", "build_seconds")}
    entry.update(
        kind="splade",
        default_engine=params["engine"],
        query_encoder="siamese: the document activation on the query",
        query_max_length=params["max_length"],
        doc_side="copied from the sparse sub-index (same encoder, max_length, pruning, scale)",
    )
    (out / PARAMS).unlink()
    return entry
