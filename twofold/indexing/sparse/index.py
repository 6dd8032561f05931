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
    forward/indptr.npy       (N+1,) int64   forward index in CSR layout: doc d's terms
    forward/terms.npy        (nnz,) int32   terms[indptr[d]:indptr[d+1]] ascending, and
    forward/weights.npy      (nnz,) float32 their weights (exact rescoring, explanations)
    lucene/                  Anserini impact index of round(w * scale) integer weights
    seismic/                 the Seismic index (``sparse.seismic``)

Engines, one interface (``search(term_ids, weights, k)`` -> (doc_id, score) pairs):

* ``native``: exact float dot product over the postings (numpy; memory-mapped);
* ``lucene``: Lucene over an Anserini impact index of quantized weights. Lucene scores
  ``sum_j round(q_j * s) * round(d_j * s)``; we divide by ``s**2`` so both engines
  report scores in the same units;
* ``seismic``: Seismic's pruned, block-skipping search proposes candidates that the
  forward index scores exactly (``sparse.seismic``): approximate recall, exact scores.

The default engine is the build's choice, else by size (:func:`default_engine`:
``native`` below 1,000,000 documents, ``lucene`` from there on); a process overrides it
with ``use_engine`` (``--sparse-engine``, ``TWOFOLD_SPARSE_ENGINE``).
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
from twofold.indexing.lucene.jvm import run_anserini
from twofold.indexing.lucene.searcher import ImpactSearcher, escape_term
from twofold.indexing.sparse.seismic import ForwardIndex, SeismicEngine, SeismicParams

# The default engine by collection size, from bench/bench_sparse_synthetic.py (BENCHMARKS.md,
# "Scale: sparse engines", 2026-12-03, one thread, native as one gathered CSC product):
# exact ``native`` scoring is the fastest engine at 10,000 documents (p50 0.20 ms; seismic
# 1.09, lucene 1.85) and at 100,000 (1.03; lucene 3.30, seismic 3.70). At 1,000,000 it is
# even with lucene (16.9 against 17.8 ms; seismic 13.9, at overlap 0.99 and an 8 GB build).
# Native grows about x16 per x10 documents there and lucene x5, so lucene takes over from
# 1M documents (its build needs 0.7 GB). Seismic is built and selectable
# (``--sparse-engine seismic``), not the default: its build memory grows x4.5 per x10.
NATIVE_MAX_DOCS = 1_000_000
DEFAULT_ENGINE_RULE = (
    f"the build's --sparse-engine, else native below {NATIVE_MAX_DOCS:,} documents and "
    "lucene from there on"
)


def default_engine(doc_count: int) -> str:
    """A collection's default sparse engine when the build names none."""
    return "native" if doc_count < NATIVE_MAX_DOCS else "lucene"


FORMAT_VERSION = 1
DEFAULT_SCALE = 100.0
ENGINES = ("native", "lucene", "seismic")


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
MERGE_BLOCK_POSTINGS = 1 << 24  # postings one merge block holds in memory (128 MiB)


def _shard_nnz(path: Path) -> tuple[int, int]:
    """(rows, nnz) of a shard without reading its arrays (only ``indptr``)."""
    with np.load(path) as z:
        indptr = z["indptr"]
        return len(indptr) - 1, int(indptr[-1])


def _open_npy(path: Path, dtype: str, length: int) -> Any:
    """A file with a ``.npy`` header for a 1-d array of ``length``, positioned for the
    raw data to be appended (the writer streams; nothing of size ``length`` in memory)."""
    fh = path.open("wb")
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (length,)}
    np.lib.format.write_array_header_1_0(fh, header)
    return fh


def write_postings(out: Path, shard_count: int, vocab_size: int) -> int:
    """Merge the shards into the CSC postings and the CSR forward index; returns nnz.

    Streaming, so peak memory depends on the shard size, not on N: pass 1 reads one
    shard at a time, appends its rows to ``forward/`` and writes its columns as a
    term-sorted run (``_runs/``); pass 2 merges the runs term block by term block
    (at most ``MERGE_BLOCK_POSTINGS`` postings, or one term's list, at a time), in shard
    order, so each posting list comes out sorted by doc ordinal."""
    paths = [shard_path(out, i) for i in range(shard_count)]
    sizes = [_shard_nnz(p) for p in paths]
    n_docs, nnz = sum(r for r, _ in sizes), sum(z for _, z in sizes)
    post, fwd, runs = out / "postings", out / "forward", out / "_runs"
    for d in (post, fwd, runs):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    counts = np.zeros((shard_count, vocab_size), dtype=np.int64)  # postings of term j in run i
    fwd_indptr = np.zeros(n_docs + 1, dtype=np.int64)
    row, base = 0, 0
    with (
        _open_npy(fwd / "terms.npy", "<i4", nnz) as ft,
        _open_npy(fwd / "weights.npy", "<f4", nnz) as fw,
    ):
        for i, path in enumerate(paths):
            shard = read_shard(path)
            shard.sort_indices()
            rows = shard.shape[0]
            fwd_indptr[row + 1 : row + rows + 1] = base + shard.indptr[1:]
            ft.write(shard.indices.astype("<i4").tobytes())
            fw.write(shard.data.astype("<f4").tobytes())
            csc = shard.tocsc()
            csc.sort_indices()
            counts[i] = np.diff(csc.indptr)
            (csc.indices.astype("<i4") + np.int32(row)).tofile(runs / f"docs-{i:05d}.bin")
            csc.data.astype("<f4").tofile(runs / f"weights-{i:05d}.bin")
            row, base = row + rows, base + int(shard.nnz)
    np.save(fwd / "indptr.npy", fwd_indptr)
    df = counts.sum(axis=0)
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    run_starts = np.zeros((shard_count, vocab_size + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=run_starts[:, 1:])
    with (
        _open_npy(post / "docs.npy", "<i4", nnz) as fd,
        _open_npy(post / "weights.npy", "<f4", nnz) as fw,
    ):
        j0 = 0
        while j0 < vocab_size:
            # the largest block of terms [j0, j1) within the budget (at least one term)
            j1 = int(np.searchsorted(indptr, indptr[j0] + MERGE_BLOCK_POSTINGS, "right")) - 1
            j1 = min(max(j1, j0 + 1), vocab_size)
            docs_parts, weight_parts, order = [], [], []
            for i in range(shard_count):
                s, e = int(run_starts[i, j0]), int(run_starts[i, j1])
                if e > s:
                    docs_parts.append(_read_run(runs / f"docs-{i:05d}.bin", "<i4", s, e))
                    weight_parts.append(_read_run(runs / f"weights-{i:05d}.bin", "<f4", s, e))
                    # term of each posting in this part, to sort by (term, run) stably
                    order.append(np.repeat(np.arange(j0, j1), counts[i, j0:j1]))
            if docs_parts:
                terms = np.concatenate(order)
                perm = np.argsort(terms, kind="stable")  # runs are in doc order already
                fd.write(np.concatenate(docs_parts)[perm].tobytes())
                fw.write(np.concatenate(weight_parts)[perm].tobytes())
            j0 = j1
    np.save(post / "indptr.npy", indptr)
    shutil.rmtree(runs)
    return nnz


def _read_run(path: Path, dtype: str, start: int, end: int) -> np.ndarray:
    item = np.dtype(dtype).itemsize
    return np.fromfile(path, dtype=dtype, count=end - start, offset=start * item)


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


# postings gathered at once by the native engine (8 bytes each in memory: 32 MiB)
GATHER_POSTINGS = 1 << 22


class NativeEngine:
    """Exact float scoring over memory-mapped CSC postings (term-at-a-time, numpy)."""

    name = "native"

    def __init__(self, path: Path, doc_ids: list[str]) -> None:
        post = path / "postings"
        self.indptr = np.load(post / "indptr.npy", mmap_mode="r")
        self.docs = np.load(post / "docs.npy", mmap_mode="r")
        self.weights = np.load(post / "weights.npy", mmap_mode="r")
        self.doc_ids = doc_ids

    def close(self) -> None:
        """Drop the memory maps (unmapped once no search holds a slice of them)."""
        self.indptr = self.docs = self.weights = np.zeros(1, dtype=np.int64)

    def scores(self, term_ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(N,) float32 scores ``sum_j q_j * w_d[j]`` for every document.

        The query terms' posting lists are gathered into small CSC matrices (one column a
        term, in the query's order) and multiplied by the query weights in scipy's C loop:
        the same float32 sums, term by term, as a numpy loop of ``acc[docs] += q_j * w``,
        bit for bit, and faster (``bench/bench_sparse_limit.py``). At most
        ``GATHER_POSTINGS`` postings are gathered at a time; each later group carries the
        sum so far as its first column (``0 + acc * 1`` is ``acc`` exactly)."""
        indptr, docs, values = self.indptr, self.docs, self.weights  # close() swaps these
        n_docs, n_terms = len(self.doc_ids), len(indptr) - 1
        acc: np.ndarray | None = None
        group: list[tuple[int, int, float]] = []
        size = 0
        pairs = zip(np.asarray(term_ids).tolist(), np.asarray(weights).tolist(), strict=True)
        for j, w in pairs:
            if not 0 <= j < n_terms:
                continue
            s, e = int(indptr[j]), int(indptr[j + 1])
            if group and size + (e - s) > GATHER_POSTINGS:
                acc = self._gathered(docs, values, group, acc)
                group, size = [], 0
            group.append((s, e, w))
            size += e - s
        if group:
            acc = self._gathered(docs, values, group, acc)
        return acc if acc is not None else np.zeros(n_docs, dtype=np.float32)

    def _gathered(
        self,
        docs: np.ndarray,
        values: np.ndarray,
        group: list[tuple[int, int, float]],
        acc: np.ndarray | None,
    ) -> np.ndarray:
        """``acc`` (or zeros) plus the group's postings times their weights, in order."""
        n_docs = len(self.doc_ids)
        # int32 indices (as stored) while every offset fits, else int64 (scipy needs one)
        small = docs.dtype == np.int32 and n_docs + GATHER_POSTINGS < 2**31
        index = np.int32 if small else np.int64
        rows = [docs[s:e] for s, e, _ in group]
        vals = [values[s:e] for s, e, _ in group]
        q = [w for _, _, w in group]
        if acc is not None:
            rows.insert(0, np.arange(n_docs, dtype=index))
            vals.insert(0, acc)
            q.insert(0, 1.0)
        ptr = np.zeros(len(rows) + 1, dtype=index)
        np.cumsum([len(r) for r in rows], out=ptr[1:])
        matrix = sp.csc_matrix(
            (np.concatenate(vals), np.concatenate(rows).astype(index, copy=False), ptr),
            shape=(n_docs, len(rows)),
        )
        return np.asarray(matrix @ np.asarray(q, dtype=np.float32), dtype=np.float32)

    def search(self, term_ids: np.ndarray, weights: np.ndarray, k: int) -> list[tuple[str, float]]:
        acc = self.scores(term_ids, weights)
        n = len(acc)
        # the k largest straight from acc (no copy of the N scores), then the positive ones
        top = np.argpartition(acc, n - k)[n - k :] if 0 < k < n else np.arange(n if k > 0 else 0)
        top = top[acc[top] > 0]
        order = top[np.lexsort((top, -acc[top]))]
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
    """Lucene over the quantized impact index (in-process JVM, ``indexing.lucene.searcher``)."""

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
        self._forward: ForwardIndex | None = None

    @property
    def doc_count(self) -> int:
        return len(self.doc_ids)

    def close(self) -> None:
        """Close every opened engine (a Lucene reader, memory maps) and drop the query
        encoders (a siamese model's weights are mapped from the collection's ``model/``)."""
        with self._lock:
            engines = list(self._engines.values())
            forward, self._forward = self._forward, None
            self._encoders = {}
        for engine in [*engines, forward]:
            close = getattr(engine, "close", None)
            if callable(close):
                close()

    def doc_weights(self, ordinal: int, term_ids: np.ndarray) -> np.ndarray:
        """w_d[j] for one document and the given terms (0 where absent): from the CSR
        forward index when the collection has one, else from the postings."""
        if self._forward is None and (self.path / "forward" / "indptr.npy").is_file():
            self._forward = ForwardIndex(self.path)
        if self._forward is not None:
            return self._forward.doc_weights(ordinal, term_ids)
        return self.native.doc_weights(ordinal, term_ids)

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
        from twofold.indexing.bundle import bundled_model
        from twofold.models.echo import load_sparse_encoder
        from twofold.models.registry import model_fingerprint
        from twofold.models.sparse import IdfQueryEncoder, load_tokenizer

        if self.kind == "inference-free":
            return IdfQueryEncoder(load_tokenizer(self.path / "tokenizer"), self.idf(), min_idf)
        recorded = dict(self.entry.get("encoder", {}))
        name = bundled_model(self.path, self.entry, str(recorded.get("name")))
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
        return load_sparse_encoder(
            name, max_length=length, query_max_length=length, precision="auto"
        )  # queries need not match the documents' precision (models.device)

    def engine(self, name: str | None = None) -> SparseEngine:
        name = name or self.default_engine
        if name not in ENGINES:
            raise InputError(f"unknown sparse engine {name!r}; known: {', '.join(ENGINES)}")
        with self._lock:
            if name not in self._engines:
                self._engines[name] = self._open_engine(name)
            return self._engines[name]

    def _open_engine(self, name: str) -> SparseEngine:
        if name == "lucene":
            return LuceneImpactEngine(self.path, self.vocab, self.scale)
        params = SeismicParams.from_json(self.entry.get("seismic"))
        return SeismicEngine(self.path, self.doc_ids, len(self.native.indptr) - 1, params)

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
