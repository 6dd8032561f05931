"""Dense sub-index: document vectors on disk plus a FAISS index over them (inner product).

Layout (``dense/``)::

    vectors.npy      float32 (doc_count, dim), row i = document ordinal i of the doc store,
                     L2-normalized; open it with ``np.load(..., mmap_mode="r")``
    index.faiss      the FAISS index (hnsw, ivfpq); absent for flat, whose index is
                     ``vectors.npy`` itself, loaded into an ``IndexFlatIP`` on open
    shards/          while building only: ``NNNNN.npy`` of ``shard_size`` rows each

Building encodes the doc store in order into resumable shards (``dense.shards``: here
or on Ray, the same shards either way), copies them into ``vectors.npy`` and builds the
index from it in chunks. ``auto`` picks the index by size: flat below
``HNSW_FROM`` documents, HNSW below ``IVFPQ_FROM``, IVF-PQ with an exact refine above.

On a GPU (``ctx.device == "cuda"``) the documents are encoded with CUDA, and when the
installed FAISS sees a GPU (``faiss-gpu-cu12``) IVF-PQ is trained and filled there
(``index_cpu_to_gpu``) and stored as a CPU index (``index_gpu_to_cpu``) for serving.
HNSW is always built on the CPU (FAISS has no GPU HNSW); flat needs no building.

Parameters come from ``BuildOptions.dense`` (``DenseOptions``: the model, the index
type, HNSW M / efConstruction / efSearch, IVF nlist / nprobe, PQ m / nbits, the refine
factor, the text prefixes, the shard size).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from twofold.core.errors import CollectionError, InputError
from twofold.indexing.buildctx import BuildContext, DenseOptions
from twofold.indexing.bundle import bundle_model, bundled_model, model_reference
from twofold.indexing.dense.shards import DenseRecipe, consolidate, encode_to_shards

if TYPE_CHECKING:
    from twofold.models.dense import TokenizedTexts

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq")
HNSW_FROM = 100_000
IVFPQ_FROM = 2_000_000
ADD_CHUNK = 65_536


def choose_index_type(requested: str, n: int) -> str:
    """``auto`` -> flat below ``HNSW_FROM`` docs, hnsw below ``IVFPQ_FROM``, else ivfpq."""
    if requested not in INDEX_TYPES:
        raise InputError(f"unknown dense index {requested!r}; known: {', '.join(INDEX_TYPES)}")
    if requested != "auto":
        return requested
    if n < HNSW_FROM:
        return "flat"
    return "hnsw" if n < IVFPQ_FROM else "ivfpq"


def index_params(
    kind: str, n: int, dim: int, options: DenseOptions | None = None
) -> dict[str, int]:
    """The parameters of an index of ``kind`` over ``n`` vectors of size ``dim``.

    HNSW (Malkov & Yashunin 2018): ``m`` links per node (M), ``ef_construction`` and
    ``ef_search`` candidate-list sizes. IVF-PQ (Jegou et al. 2011): ``nlist`` cells
    (about 4 sqrt(n), at least 39 training points each), ``nprobe`` cells visited,
    ``pq_m`` sub-quantizers of ``nbits`` bits (``dim / pq_m`` dims each, 8 by default);
    the refine stage rescores ``refine_k_factor * k`` candidates with the exact vectors.
    ``None`` in ``options``: derived from ``n`` and ``dim``; values that cannot work for
    them raise ``InputError`` naming the flag."""
    o = options or DenseOptions()
    if kind == "hnsw":
        return {
            "m": o.hnsw_m,
            "ef_construction": o.hnsw_ef_construction,
            "ef_search": o.hnsw_ef_search,
        }
    if kind != "ivfpq":
        return {}
    nbits = o.pq_nbits if o.pq_nbits is not None else (8 if n >= 256 * 39 else 4)
    nlist = o.ivf_nlist if o.ivf_nlist is not None else max(1, min(int(4 * math.sqrt(n)), n // 39))
    pq_m = o.pq_m if o.pq_m is not None else _divisor_near(dim, max(1, dim // 8))
    check_pq_m(pq_m, dim)
    if n < 2**nbits or n < nlist:
        raise InputError(
            f"IVF-PQ over {n} vectors cannot train {2**nbits}-centroid codebooks "
            f"(--pq-nbits {nbits}) and {nlist} cells (--ivf-nlist); lower them or use "
            "--dense-index flat or hnsw"
        )
    nprobe = o.ivf_nprobe if o.ivf_nprobe is not None else max(1, min(nlist, 16))
    if nprobe > nlist:
        raise InputError(f"--ivf-nprobe {nprobe} exceeds the {nlist} IVF cells (--ivf-nlist)")
    return {
        "nlist": nlist,
        "nprobe": nprobe,
        "pq_m": pq_m,
        "nbits": nbits,
        "refine_k_factor": o.refine_k_factor,
    }


def check_pq_m(pq_m: int, dim: int) -> None:
    """PQ cuts a vector into ``pq_m`` equal parts: ``pq_m`` must divide ``dim``."""
    if dim % pq_m:
        divisors = ", ".join(str(d) for d in range(1, dim + 1) if dim % d == 0)
        raise InputError(
            f"--pq-m {pq_m} must divide the dense model's dimension {dim} (divisors: {divisors})"
        )


def _divisor_near(dim: int, target: int) -> int:
    return min((d for d in range(1, dim + 1) if dim % d == 0), key=lambda d: (abs(d - target), d))


# --- FAISS -----------------------------------------------------------------------------


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        from twofold.core.errors import DependencyError

        raise DependencyError(
            "the dense index needs FAISS: pip install faiss-cpu (or faiss-gpu-cu12 on a GPU)"
        ) from exc
    return faiss


def faiss_gpus() -> int:
    """GPUs the installed FAISS can use (0 with faiss-cpu)."""
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _chunks(vectors: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(vectors), ADD_CHUNK):
        yield np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)


def build_faiss(vectors: np.ndarray, kind: str, params: Mapping[str, int], gpu: bool) -> Any:
    """A FAISS index over ``vectors`` (n, dim) float32 (may be a memmap), inner product.

    ``flat`` gives an ``IndexFlatIP``; ``hnsw`` an ``IndexHNSWFlat``; ``ivfpq`` an
    ``IndexRefine(IndexIVFPQ, IndexFlatIP)``. With ``gpu``, IVF-PQ trains and adds on GPU 0
    and comes back as a CPU index. Vectors are added in chunks of ``ADD_CHUNK`` rows.
    """
    faiss = _faiss()
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
        for chunk in _chunks(vectors):
            index.add(chunk)
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
        for chunk in _chunks(vectors):
            index.add(chunk)
        return index
    if kind != "ivfpq":
        raise InputError(f"unknown dense index {kind!r}; known: {', '.join(INDEX_TYPES[1:])}")
    spec = f"IVF{params['nlist']},PQ{params['pq_m']}x{params['nbits']}"
    base = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    n_train = min(n, max(params["nlist"] * 64, 256 * 64))
    sample = np.sort(rng.choice(n, size=n_train, replace=False))
    train = np.ascontiguousarray(vectors[sample], dtype=np.float32)
    if gpu and params["nbits"] != 8:
        log.info(
            "dense: GPU IVF-PQ needs 8-bit codes; training %d-bit codes on the CPU", params["nbits"]
        )
        gpu = False
    if gpu:
        res = faiss.StandardGpuResources()
        co = faiss.GpuClonerOptions()
        co.useFloat16 = True  # float16 lookup tables: needed for many sub-quantizers
        work = faiss.index_cpu_to_gpu(res, 0, base, co)
        work.train(train)
        for chunk in _chunks(vectors):
            work.add(chunk)
        base = faiss.index_gpu_to_cpu(work)
    else:
        base.train(train)
        for chunk in _chunks(vectors):
            base.add(chunk)
    faiss.extract_index_ivf(base).nprobe = params["nprobe"]
    refine = faiss.IndexFlatIP(dim)
    for chunk in _chunks(vectors):
        refine.add(chunk)
    index = faiss.IndexRefine(base, refine)  # the Python wrapper keeps base and refine alive
    index.k_factor = float(params["refine_k_factor"])
    return index


# --- build -----------------------------------------------------------------------------


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    """Encode the doc store into ``out/vectors.npy`` and build the FAISS index."""
    from twofold.models.device import resolve_precision
    from twofold.models.registry import model_fingerprint

    opts, dense = ctx.options, ctx.options.dense
    # resolved once, here, for the device the encoding runs on (a Ray cluster's), so
    # every worker encodes in the precision the manifest and the resume state record
    precision = resolve_precision(dense.precision, ctx.encoding().device)
    recipe = DenseRecipe(
        model=dense.model,
        weights_sha256=model_fingerprint(dense.model)["sha256"],
        max_length=opts.max_length,
        batch_size=opts.batch_size,
        query_prefix=dense.query_prefix,
        doc_prefix=dense.doc_prefix,
        precision=precision,
    )
    local = recipe.load(ctx.device)
    encoder = local.encoder
    n, dim = len(ctx.docs), encoder.dim
    kind = choose_index_type(dense.index, n)
    params = index_params(kind, n, dim, dense)  # checked in preflight; hub models only here
    shard_size = dense.shard_size
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "encoder": encoder.fingerprint(),
        **encoder.config(),
        "precision": encoder.precision,
        "shard_size": shard_size,
    }
    state_file, shards = out / "shards.json", out / "shards"
    if state_file.is_file() and json.loads(state_file.read_text()) != state:
        shutil.rmtree(shards, ignore_errors=True)  # other encoder settings: start over
    state_file.write_text(json.dumps(state))
    reused, written = encode_to_shards(ctx, recipe, local, shards, shard_size)
    vectors = consolidate(shards, out / "vectors.npy", n, dim, shard_size)
    gpu = ctx.device == "cuda" and faiss_gpus() > 0
    if ctx.device == "cuda" and not gpu:
        log.warning("dense: FAISS sees no GPU (faiss-cpu installed?); building on the CPU")
    if kind != "flat":
        faiss = _faiss()
        index = build_faiss(vectors, kind, params, gpu=gpu and kind == "ivfpq")
        tmp = out / "index.faiss.tmp"
        faiss.write_index(index, str(tmp))
        tmp.replace(out / "index.faiss")
    shutil.rmtree(shards)
    state_file.unlink()
    return {
        "format_version": FORMAT_VERSION,
        "model": model_reference(dense.model),
        "encoder": encoder.fingerprint(),
        "model_files": bundle_model(dense.model, out),  # the query side loads this
        **encoder.config(),
        "precision": encoder.precision,  # the documents' (queries: the reader's own)
        "metric": "inner_product",
        "normalized": True,
        "count": n,
        "index": {"type": kind, **params},
        "faiss_gpu": bool(gpu and kind == "ivfpq"),
        "shards": {"size": shard_size, "reused": reused, "written": written},
        "executor": ctx.encoding().kind,
    }


# --- open ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorHits:
    """Results of ``search_vectors``: ``scores`` (n, k) float32 inner products, best first,
    and ``ordinals`` (n, k) int64 doc-store ordinals; ``-1`` pads rows with fewer hits."""

    scores: np.ndarray
    ordinals: np.ndarray


class DenseIndex:
    """An opened dense sub-index.

    - ``vectors``: (count, dim) float32 memmap of the stored, normalized doc vectors;
      row i is doc-store ordinal i (``collection.docs.ids[i]``)
    - ``encode_queries(texts)`` / ``encode_docs(texts)``: (n, dim) float32 with the
      weights and settings that built the index, in the precision ``auto`` picks here
      (``models.device.resolve_precision``; the documents' own is the manifest's
      ``precision``), loaded once, on first use
    - ``search_vectors(queries, k, within=None)``: top-``k`` by inner product
    """

    def __init__(self, path: Path, entry: Mapping[str, Any], device: str = "auto") -> None:
        if entry.get("format_version") != FORMAT_VERSION:
            raise CollectionError(
                f"{path}: dense index format_version {entry.get('format_version')!r} is not "
                f"supported (this Twofold reads {FORMAT_VERSION}); rebuild the collection"
            )
        self.path, self.entry = path, dict(entry)
        self.dim, self.count = int(entry["dim"]), int(entry["count"])
        self.index_type = str(entry["index"]["type"])
        try:
            self.vectors: np.ndarray = np.load(path / "vectors.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise CollectionError(f"{path}: cannot read vectors.npy ({exc})") from None
        if self.vectors.shape != (self.count, self.dim) or self.vectors.dtype != np.float32:
            raise CollectionError(
                f"{path}: vectors.npy is {self.vectors.dtype}{self.vectors.shape}, the manifest "
                f"says float32({self.count}, {self.dim})"
            )
        faiss = _faiss()
        if self.index_type == "flat":
            self.index = build_faiss(self.vectors, "flat", {}, gpu=False)
        else:
            file = path / "index.faiss"
            if not file.is_file():
                raise CollectionError(f"{path}: index.faiss is missing")
            self.index = faiss.read_index(str(file))
        if self.index.ntotal != self.count or self.index.d != self.dim:
            raise CollectionError(f"{path}: index.faiss does not match vectors.npy")
        self._device = device
        self._encoder: Any = None
        self._lock = threading.Lock()

    def set_search_params(
        self,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
        k_factor: float | None = None,
    ) -> None:
        """Change HNSW ``ef_search``, IVF ``nprobe`` or the refine ``k_factor`` (not while
        other threads search)."""
        faiss = _faiss()
        if ef_search is not None and self.index_type == "hnsw":
            faiss.downcast_index(self.index).hnsw.efSearch = int(ef_search)
        if self.index_type == "ivfpq":
            refine = faiss.downcast_index(self.index)
            if nprobe is not None:
                faiss.extract_index_ivf(refine.base_index).nprobe = int(nprobe)
            if k_factor is not None:
                refine.k_factor = float(k_factor)

    @property
    def encoder(self) -> Any:
        """The query/doc encoder of this index (a ``models.dense.DenseEncoder``)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = self._load_encoder()
            return self._encoder

    def _load_encoder(self) -> Any:
        from twofold.models.dense import DenseEncoder
        from twofold.models.device import resolve_device

        e = self.entry
        encoder = DenseEncoder(
            bundled_model(self.path, e, str(e["model"])),
            device=resolve_device(self._device),
            max_length=int(e["max_length"]),
            pooling=str(e["pooling"]),
            query_prefix=str(e["query_prefix"]),
            doc_prefix=str(e["doc_prefix"]),
            # queries need not match the documents' precision; documents encoded through
            # this reader (an adapter's re-encoded positives, free-text histories) take
            # the queries' precision too
            precision="auto",
        )
        want, got = e["encoder"].get("sha256"), encoder.fingerprint().get("sha256")
        if want != got or encoder.dim != self.dim:
            raise CollectionError(
                f"{self.path}: model {e['model']!r} now has weights {got} (dim {encoder.dim}); "
                f"the index was built with {want} (dim {self.dim}): rebuild it"
            )
        return encoder

    @property
    def doc_count(self) -> int:
        return self.count

    def close(self) -> None:
        """Drop the vectors' memory map, the FAISS index and the encoder (its weights are
        memory-mapped from the collection's ``model/``)."""
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        self.index = None
        with self._lock:
            self._encoder = None

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        result: np.ndarray = self.encoder.encode_queries(texts)
        return result

    def encode_docs(self, texts: Sequence[str]) -> np.ndarray:
        result: np.ndarray = self.encoder.encode_docs(texts)
        return result

    def tokenize_docs(self, texts: Sequence[str]) -> TokenizedTexts:
        result: TokenizedTexts = self.encoder.tokenize_docs(texts)
        return result

    def encode_tokenized(self, batch: TokenizedTexts) -> np.ndarray:
        result: np.ndarray = self.encoder.encode_tokenized(batch)
        return result

    def search_vectors(
        self, queries: np.ndarray, k: int, within: np.ndarray | None = None
    ) -> VectorHits:
        """Top-``k`` doc ordinals by inner product for each row of ``queries`` (n, dim),
        float32, normalized like the stored vectors (``encode_queries`` output).

        Returns ``VectorHits`` of shape (n, min(k, count)) through the FAISS index (exact
        for flat, approximate for hnsw/ivfpq). ``within`` (int ordinals) restricts the
        search to those documents and is answered exactly from ``vectors`` whatever the
        index type; its result has min(k, len(unique(within))) columns.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise InputError(f"query vectors have dim {q.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise InputError("k must be at least 1")
        if within is not None:
            return exact_within(self.vectors, q, k, np.asarray(within, dtype=np.int64))
        scores, ordinals = self.index.search(q, min(k, max(self.count, 1)))
        return VectorHits(scores.astype(np.float32), ordinals.astype(np.int64))


def exact_within(vectors: np.ndarray, q: np.ndarray, k: int, within: np.ndarray) -> VectorHits:
    subset = np.unique(within)
    if len(subset) and (subset[0] < 0 or subset[-1] >= len(vectors)):
        raise InputError(f"ordinals in `within` must lie in [0, {len(vectors)})")
    kk = min(k, len(subset))
    scores = np.full((len(q), kk), -np.inf, dtype=np.float32)
    ords = np.full((len(q), kk), -1, dtype=np.int64)
    if kk == 0:
        return VectorHits(scores, ords)
    sims = q @ np.asarray(vectors[subset]).T  # (n, |subset|)
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    top_scores = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    scores[:] = np.take_along_axis(top_scores, order, axis=1)
    ords[:] = subset[np.take_along_axis(top, order, axis=1)]
    return VectorHits(scores, ords)


def open_index(path: Path, entry: dict[str, Any]) -> DenseIndex:
    return DenseIndex(path, entry)
