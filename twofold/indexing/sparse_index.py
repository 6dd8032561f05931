"""The learned-sparse index format (writer and reader) and its two engines.

On disk, one sub-index directory (``sparse/`` or ``splade/``)::

    shards/shard-00000.npz   encoded documents, CSR (docs x V) float32, one per N docs;
                             written atomically, kept across an interrupted build
    postings/indptr.npy      (V+1,) int64   inverted index in CSC layout: for term j,
    postings/docs.npy        (nnz,) int32   doc ordinals docs[indptr[j]:indptr[j+1]]
    postings/weights.npy     (nnz,) float32 and their float weights w_d[j]
    doc_ids.txt              doc id per ordinal (the doc store's order)
    vocab.txt                token string per term id
    idf.npy                  (V,) float32 query-side idf (inference-free index only)
    tokenizer/               the tokenizer (inference-free: queries need no model)
    lucene/                  Anserini impact index of round(w * scale) integer weights

Engines, one interface (``search(term_ids, weights, k)`` -> (doc_id, score) pairs):

* ``native``: exact float dot product over the postings (numpy; memory-mapped);
* ``lucene``: Lucene over an Anserini impact index of quantized weights. Lucene scores
  ``sum_j round(q_j * s) * round(d_j * s)``; we divide by ``s**2`` so both engines
  report scores in the same units.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from twofold.core.errors import CollectionError, FormatVersionError, InputError, ModelError
from twofold.indexing.jvm import run_anserini
from twofold.indexing.lucene import ImpactSearcher, escape_term

FORMAT_VERSION = 1
DEFAULT_SCALE = 100.0
ENGINES = ("native", "lucene")


# ----------------------------------------------------------------------------- shards
def shard_path(out: Path, index: int) -> Path:
    return out / "shards" / f"shard-{index:05d}.npz"


def write_shard(path: Path, matrix: sp.csr_matrix) -> None:
    """Write a (docs x V) CSR shard atomically: a crash never leaves half a shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    m = matrix.tocsr()
    np.savez(
        tmp,
        data=m.data.astype(np.float32),
        indices=m.indices.astype(np.int32),
        indptr=m.indptr.astype(np.int64),
        shape=np.asarray(m.shape, dtype=np.int64),
    )
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_shard(path: Path) -> sp.csr_matrix:
    with np.load(path) as z:
        shape = tuple(int(x) for x in z["shape"])
        return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)


def iter_shards(out: Path, count: int) -> Iterator[sp.csr_matrix]:
    for i in range(count):
        yield read_shard(shard_path(out, i))


# --------------------------------------------------------------------------- postings
def write_postings(out: Path, shard_count: int, vocab_size: int) -> int:
    """Merge the shards into the CSC postings; returns nnz. Memory: O(nnz) (the index)."""
    shards = list(iter_shards(out, shard_count))
    if shards:
        matrix = sp.vstack(shards, format="csr")
    else:
        matrix = sp.csr_matrix((0, vocab_size), dtype=np.float32)
    csc = matrix.tocsc()
    csc.sort_indices()
    post = out / "postings"
    post.mkdir(parents=True, exist_ok=True)
    np.save(post / "indptr.npy", csc.indptr.astype(np.int64))
    np.save(post / "docs.npy", csc.indices.astype(np.int32))
    np.save(post / "weights.npy", csc.data.astype(np.float32))
    return int(csc.nnz)


def quantize(weights: np.ndarray, scale: float) -> np.ndarray:
    """``round(w * scale)`` as int64 (Lucene reads impacts and query weights as ints)."""
    return np.rint(np.asarray(weights, dtype=np.float64) * scale).astype(np.int64)


def write_lucene(
    out: Path, shard_count: int, doc_ids: Sequence[str], vocab: Sequence[str], scale: float
) -> None:
    """Export shards as a JsonVectorCollection of integer impacts and index it."""
    staging = out / "_lucene_input"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(out / "lucene", ignore_errors=True)
    staging.mkdir(parents=True)
    ordinal = 0
    with (staging / "docs.jsonl").open("w", encoding="utf-8") as fh:
        for shard in iter_shards(out, shard_count):
            for r in range(shard.shape[0]):
                s, e = shard.indptr[r], shard.indptr[r + 1]
                q = quantize(shard.data[s:e], scale)
                vector = {
                    vocab[j]: int(v) for j, v in zip(shard.indices[s:e], q, strict=True) if v > 0
                }
                fh.write(
                    json.dumps({"id": doc_ids[ordinal], "content": "", "vector": vector}) + "\n"
                )
                ordinal += 1
    run_anserini(
        "io.anserini.index.IndexCollection",
        ["-collection", "JsonVectorCollection", "-input", str(staging),
         "-index", str(out / "lucene"), "-generator", "DefaultLuceneDocumentGenerator",
         "-impact", "-pretokenized", "-threads", "2"],
    )  # fmt: skip
    shutil.rmtree(staging)


# ---------------------------------------------------------------------------- engines
class QueryEncoder(Protocol):
    """What a sparse index needs from the models layer: texts -> (n, V) CSR weights."""

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_matrix: ...

    def encode_query(self, text: str) -> tuple[np.ndarray, np.ndarray]: ...


class SparseEngine(Protocol):
    """One verb: the top ``k`` documents for a sparse query, best first."""

    name: str

    def search(
        self, term_ids: np.ndarray, weights: np.ndarray, k: int
    ) -> list[tuple[str, float]]: ...


class NativeEngine:
    """Exact float scoring over memory-mapped CSC postings (term-at-a-time, numpy)."""

    name = "native"

    def __init__(self, path: Path, doc_ids: list[str]) -> None:
        post = path / "postings"
        self.indptr = np.load(post / "indptr.npy", mmap_mode="r")
        self.docs = np.load(post / "docs.npy", mmap_mode="r")
        self.weights = np.load(post / "weights.npy", mmap_mode="r")
        self.doc_ids = doc_ids

    def scores(self, term_ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(N,) float32 scores ``sum_j q_j * w_d[j]`` for every document."""
        acc = np.zeros(len(self.doc_ids), dtype=np.float32)
        for j, w in zip(np.asarray(term_ids).tolist(), np.asarray(weights).tolist(), strict=True):
            if not 0 <= j < len(self.indptr) - 1:
                continue
            s, e = int(self.indptr[j]), int(self.indptr[j + 1])
            acc[self.docs[s:e]] += np.float32(w) * self.weights[s:e]
        return acc

    def search(self, term_ids: np.ndarray, weights: np.ndarray, k: int) -> list[tuple[str, float]]:
        acc = self.scores(term_ids, weights)
        hit = np.flatnonzero(acc > 0)
        if len(hit) > k:
            hit = hit[np.argpartition(-acc[hit], k - 1)[:k]]
        order = hit[np.lexsort((hit, -acc[hit]))]
        return [(self.doc_ids[i], float(acc[i])) for i in order]

    def doc_weights(self, ordinal: int, term_ids: np.ndarray) -> np.ndarray:
        """w_d[j] for one document and the given terms (0 where absent)."""
        out = np.zeros(len(term_ids), dtype=np.float32)
        for n, j in enumerate(np.asarray(term_ids).tolist()):
            if not 0 <= j < len(self.indptr) - 1:
                continue
            s, e = int(self.indptr[j]), int(self.indptr[j + 1])
            pos = int(np.searchsorted(self.docs[s:e], ordinal))
            if pos < e - s and int(self.docs[s + pos]) == ordinal:
                out[n] = self.weights[s + pos]
        return out


class LuceneImpactEngine:
    """Lucene over the quantized impact index (in-process JVM, ``indexing.lucene``)."""

    name = "lucene"

    def __init__(self, path: Path, vocab: list[str], scale: float) -> None:
        if not (path / "lucene").is_dir():
            raise CollectionError(f"{path} has no Lucene impact index (lucene/ missing)")
        self.vocab = vocab
        self.scale = scale
        self._searcher = ImpactSearcher(path / "lucene")
        self._terms = [escape_term(t) for t in vocab]  # query syntax, once; "" unsearchable

    def search(self, term_ids: np.ndarray, weights: np.ndarray, k: int) -> list[tuple[str, float]]:
        ids = np.asarray(term_ids)
        q = quantize(weights, self.scale)
        keep = (q > 0) & (ids >= 0) & (ids < len(self.vocab))
        terms = self._terms
        pairs = [
            (terms[j], v)
            for j, v in zip(ids[keep].tolist(), q[keep].tolist(), strict=True)
            if terms[j]
        ]
        if not pairs:
            return []
        hits = self._searcher.search([t for t, _ in pairs], [v for _, v in pairs], int(k))
        denom = self.scale * self.scale
        return [(doc_id, score / denom) for doc_id, score in hits]

    def close(self) -> None:
        self._searcher.close()


# ------------------------------------------------------------------------------ index
class SparseIndex:
    """An opened sparse sub-index: vocabulary, doc ids, idf, and its engines (lazy)."""

    def __init__(self, path: Path, entry: dict[str, Any]) -> None:
        version = entry.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatVersionError(
                f"{path}: sparse index format_version {version!r} is not supported (this "
                f"Twofold reads {FORMAT_VERSION}); rebuild the collection"
            )
        for name in ("postings/indptr.npy", "doc_ids.txt", "vocab.txt"):
            if not (path / name).is_file():
                raise CollectionError(f"{path}: {name} missing; rebuild the collection")
        self.path = path
        self.entry = entry
        self.kind: str = str(entry["kind"])
        self.scale = float(entry.get("quantization", {}).get("scale", DEFAULT_SCALE))
        self.doc_ids = (path / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
        self.vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        self._ordinal = {d: i for i, d in enumerate(self.doc_ids)}
        self._engines: dict[str, SparseEngine] = {}
        self.native = NativeEngine(path, self.doc_ids)
        self._engines["native"] = self.native
        self.default_engine = str(entry.get("default_engine", "native"))
        self.query_min_idf = float(entry.get("query_min_idf", 0.0))
        self._encoders: dict[float, QueryEncoder] = {}
        self._lock = threading.Lock()

    def idf(self) -> np.ndarray:
        idf: np.ndarray = np.load(self.path / "idf.npy")
        return idf

    def query_encoder(self, min_idf: float | None = None) -> QueryEncoder:
        """The query side, loaded once: the idf table (inference-free, no model) or the
        siamese MLM encoder named in the manifest (its sha256 must match).

        ``min_idf`` (inference-free only): drop query tokens with idf below it; ``None``
        uses the index's ``query_min_idf`` (0, exact, unless the build set one)."""
        key = self.query_min_idf if min_idf is None else float(min_idf)
        if self.kind != "inference-free":
            key = 0.0
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = self._load_encoder(key)
            return self._encoders[key]

    def _load_encoder(self, min_idf: float) -> QueryEncoder:
        from twofold.models.echo import load_sparse_encoder
        from twofold.models.registry import model_fingerprint
        from twofold.models.sparse import IdfQueryEncoder, load_tokenizer

        if self.kind == "inference-free":
            return IdfQueryEncoder(load_tokenizer(self.path / "tokenizer"), self.idf(), min_idf)
        recorded = dict(self.entry.get("encoder", {}))
        name = str(recorded.get("name"))
        current = model_fingerprint(name)
        if (
            recorded.get("sha256") not in (None, "unknown")
            and current["sha256"] != recorded["sha256"]
        ):
            raise ModelError(
                f"{self.path}: the index was built with {name} sha256 {recorded['sha256']}, "
                f"but that model now has {current['sha256']}; rebuild the collection"
            )
        length = int(self.entry.get("query_max_length", self.entry.get("max_length", 256)))
        return load_sparse_encoder(name, max_length=length, query_max_length=length)

    def engine(self, name: str | None = None) -> SparseEngine:
        name = name or self.default_engine
        if name not in ENGINES:
            raise InputError(f"unknown sparse engine {name!r}; known: {', '.join(ENGINES)}")
        if name not in self._engines:
            self._engines[name] = LuceneImpactEngine(self.path, self.vocab, self.scale)
        return self._engines[name]

    def use_engine(self, name: str) -> None:
        """Serve with engine ``name`` by default from now on (opens it; the manifest's
        ``default_engine`` is only the build's choice)."""
        self.engine(name)
        self.default_engine = name

    def ordinal(self, doc_id: str) -> int:
        try:
            return self._ordinal[doc_id]
        except KeyError:
            raise InputError(f"doc id {doc_id!r} is not in this index") from None


def write_vocab(out: Path, vocab: Sequence[str]) -> None:
    if any("\n" in t for t in vocab):
        raise InputError("a vocabulary token contains a newline")
    (out / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")


def write_doc_ids(out: Path, doc_ids: Sequence[str]) -> None:
    (out / "doc_ids.txt").write_text("".join(d + "\n" for d in doc_ids), encoding="utf-8")
