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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from twofold.core.errors import InputError
from twofold.core.types import Doc
from twofold.indexing.buildctx import BuildContext
from twofold.indexing.bundle import bundle_model
from twofold.indexing.encoding import by_shard, shard_chunks
from twofold.indexing.sparse.index import (
    DEFAULT_ENGINE_RULE,
    FORMAT_VERSION,
    default_engine,
    iter_shards,
    shard_path,
    write_doc_ids,
    write_lucene,
    write_postings,
    write_shard,
    write_vocab,
)
from twofold.indexing.sparse.seismic import SeismicParams, build_seismic

if TYPE_CHECKING:
    from twofold.models.sparse import Pruning

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
    from twofold.models.device import resolve_precision
    from twofold.models.echo import is_causal_lm
    from twofold.models.registry import model_fingerprint

    # of the document encoder, resolved once for the device the encoding runs on; echo
    # (causal-LM) encoders run in float32 whatever was asked, so their shards and the
    # splade-reuses-sparse check say so before anything is loaded
    precision = resolve_precision(o.precision, ctx.encoding().device, "sparse")
    return {
        "kind": KINDS[prefix],
        "precision": "fp32" if is_causal_lm(o.model) else precision,
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


# Parameters of what is built from the shards, not of the shards themselves: changing one
# (a Seismic default, the engines, the impact scale) keeps the finished shards on resume.
INDEX_PARAMS = frozenset({"engine", "engines", "seismic", "scale"})


def _shard_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in INDEX_PARAMS}


def _prepare(out: Path, params: dict[str, Any]) -> None:
    """Keep finished shards only if they were made with the same document parameters."""
    file = out / PARAMS
    if out.is_dir():
        try:
            same = _shard_params(json.loads(file.read_text())) == _shard_params(params)
        except (OSError, json.JSONDecodeError, AttributeError):
            same = False
        if not same:  # other parameters, or other weights under the same model name
            log.info("%s: finished shards were made otherwise; encoding again", out.name)
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(params, sort_keys=True))


def build_sparse(ctx: BuildContext, out: Path, prefix: str) -> dict[str, Any]:
    """Encode, shard, merge, export to Lucene; returns the manifest entry."""
    from twofold.models.echo import ECHO_AGAIN, ECHO_PREFIX, EchoSparseEncoder
    from twofold.models.registry import model_fingerprint
    from twofold.models.sparse import Pruning, idf_from_df, model_idf, special_ids, vocab_list

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
    recipe = SparseRecipe(
        model=params["model"],
        weights_sha256=params["weights_sha256"],
        max_length=params["max_length"],
        pruning=pruning,
        token_budget=params["token_budget"],
        batch_size=ctx.options.batch_size,
        precision=params["precision"],
    )
    local = recipe.load(ctx.device)
    encoder = local.encoder
    vocab = vocab_list(encoder.tokenizer)[: encoder.vocab_size]
    vocab += [f"[twofold-unused-{j}]" for j in range(len(vocab), encoder.vocab_size)]
    special = np.asarray(special_ids(encoder.tokenizer), dtype=np.int64)
    special = special[special < encoder.vocab_size]
    n, size = len(ctx.docs), params["shard_size"]
    n_shards = (n + size - 1) // size
    todo = [i for i in range(n_shards) if not _shard_done(out, i)]  # the rest: finished
    chunks = shard_chunks(n, size, max(256, 8 * ctx.options.batch_size), todo)
    executor = ctx.encoding()
    t0 = time.perf_counter()
    results = executor.encode(ctx.docs, recipe, chunks, local, f"{prefix}: encode")
    for i, outputs in by_shard(results, chunks):
        df = np.zeros(encoder.vocab_size, dtype=np.int64)
        for o in outputs:
            df += o["df"]
        df[special] = 0
        parts = [
            sp.csr_matrix((o["data"], o["indices"], o["indptr"]), shape=tuple(o["shape"]))
            for o in outputs
        ]
        shard_path(out, i).parent.mkdir(parents=True, exist_ok=True)
        np.save(_df_path(out, i), df)  # before the shard: a shard on disk implies its df
        write_shard(shard_path(out, i), sp.vstack(parts, format="csr"))
    encode_seconds, encoded = time.perf_counter() - t0, sum(c.size for c in chunks)
    nnz = write_postings(out, n_shards, encoder.vocab_size)
    write_doc_ids(out, ctx.docs.ids)
    write_vocab(out, vocab)
    entry: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": params["kind"],
        "encoder": model_fingerprint(params["model"]),
        "precision": encoder.precision,  # the documents' (echo encoders stay fp32)
        "max_length": params["max_length"],
        "activation": "log(1 + relu(max_i mask_i * logits_i)), special tokens zeroed",
        "pruning": pruning.to_json(),
        "quantization": {"scale": params["scale"], "rule": "round(w * scale), docs and queries"},
        "engines": params["engines"],
        "default_engine": params["engine"],
        "default_engine_rule": DEFAULT_ENGINE_RULE,
        "engine_info": {k: v for k, v in ENGINE_INFO.items() if k in params["engines"]},
        "vocab_size": encoder.vocab_size,
        "postings": nnz,
        "avg_terms_per_doc": round(nnz / max(n, 1), 2),
        "shard_size": size,
        "encode_docs_per_second": round(encoded / encode_seconds, 2) if encode_seconds else None,
        "device": executor.device,
        "executor": executor.kind,
    }
    if isinstance(encoder, EchoSparseEncoder):
        entry["max_length"] = encoder.max_length  # one copy, capped so the echo fits
        entry["activation"] = (
            "echo (arXiv 2408.11119): the causal LM reads prefix + text + again + text; "
            "log(1 + relu(max over the second copy's tokens of logits)), special tokens zeroed"
        )
        entry["echo"] = {
            "prefix": ECHO_PREFIX,
            "again": ECHO_AGAIN,
            "max_length_asked": params["max_length"],
        }
    if params["kind"] == "inference-free":
        idf = model_idf(params["model"], encoder.tokenizer)
        source = "idf.json"
        if idf is None:
            df_total = np.zeros(encoder.vocab_size, dtype=np.int64)
            for i in range(n_shards):
                df_total += np.load(_df_path(out, i))
            idf, source = idf_from_df(df_total, n), "collection"
        padded = np.zeros(encoder.vocab_size, dtype=np.float32)
        padded[: min(len(idf), encoder.vocab_size)] = idf[: encoder.vocab_size]
        np.save(out / "idf.npy", padded)
        # A fast tokenizer saves the truncation of its last call, which the query side's
        # backend tokenizer applies: the documents' (max_length), here whichever
        # executor encoded them (on Ray, this process's tokenizer made no call yet).
        encoder.tokenize([""], params["max_length"])
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


def _df_path(out: Path, i: int) -> Path:
    """Document frequencies of shard ``i`` (int64 (V,), special tokens zeroed)."""
    return shard_path(out, i).with_name(f"df-{i:05d}.npy")


def _shard_done(out: Path, i: int) -> bool:
    return shard_path(out, i).is_file() and _df_path(out, i).is_file()


@dataclass(frozen=True)
class SparseRecipe:
    """What loads the learned-sparse document encoder, in this process or in a Ray
    actor (``encoding.EncoderRecipe``); ``batch_size`` texts per forward pass."""

    model: str
    weights_sha256: str
    max_length: int
    pruning: Pruning
    token_budget: int
    batch_size: int
    precision: str = "fp32"  # fp32 | bf16, resolved by the build

    def text(self, doc: Doc) -> str:
        return doc_text(doc)

    def load(self, device: str) -> SparseChunks:
        from twofold.models.echo import load_sparse_encoder

        encoder = load_sparse_encoder(
            self.model,
            device=device,
            max_length=self.max_length,
            pruning=self.pruning,
            token_budget=self.token_budget,
            precision=self.precision,
        )
        return SparseChunks(encoder, self)


class SparseChunks:
    """One chunk of texts -> its pruned CSR weights (``data`` float32, ``indices``,
    ``indptr``, ``shape`` (n, V)) and ``df`` (V,) int64: how many of its documents hold each token
    (tokenized with truncation to ``max_length``)."""

    def __init__(self, encoder: Any, recipe: SparseRecipe) -> None:
        self.encoder, self.recipe = encoder, recipe

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        from twofold.models.sparse import prune

        ids = self.encoder.tokenize(texts, self.recipe.max_length)
        df = np.zeros(self.encoder.vocab_size, dtype=np.int64)
        for x in ids:
            df[np.unique(np.asarray(x, dtype=np.int64))] += 1
        weights = self.encoder.encode_ids(ids, self.recipe.batch_size)
        m = prune(weights, self.recipe.pruning)
        shape = np.asarray(m.shape, dtype=np.int64)
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": shape, "df": df}


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
    # what sparse was asked for: an echo encoder records the max_length it could use
    asked_length = other.get("echo", {}).get("max_length_asked", other.get("max_length"))
    same = (
        other.get("encoder") == fingerprint
        and fingerprint.get("sha256") != "unknown"
        and asked_length == params["max_length"]
        and other.get("precision", "fp32") == params["precision"]
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
