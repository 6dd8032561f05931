"""The Milvus backend's reader: sub-indexes whose manifest entry says ``backend: milvus``.

A Milvus-backed ``sparse``/``splade``/``dense`` sub-index keeps locally what its query
side needs (doc ids, vocabulary, the idf table and tokenizer of the inference-free
index, the encoders' names and sha256) and searches Milvus (``milvus_store`` writes
it). The opened objects are the embedded ones' subclasses, so the retrievers, the
pipeline and the HTTP API use them unchanged:

* ``MilvusSparseIndex``: the query is encoded here (idf weights: no model, or the
  SPLADE MLM) and Milvus scores ``sum_j q_j * w_d[j]`` over ``SPARSE_INVERTED_INDEX``
  (inner product, float weights as stored: the native engine's arithmetic);
* ``MilvusDenseIndex``: the query is embedded here and Milvus searches the HNSW or
  IVF_FLAT index by inner product.

The server is ``$TWOFOLD_MILVUS_URI`` when set, else the URI the build wrote to.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import CollectionError, InputError
from twofold.indexing.dense.index import FORMAT_VERSION as DENSE_FORMAT
from twofold.indexing.dense.index import DenseIndex, VectorHits
from twofold.indexing.milvus_store import DENSE_DEFAULTS, client, serving_uri
from twofold.indexing.sparse.index import DEFAULT_SCALE, QueryEncoder, SparseIndex
from twofold.indexing.sparse.index import FORMAT_VERSION as SPARSE_FORMAT

ENGINE = "milvus"
SPARSE_SEARCH = {"drop_ratio_search": 0.0}  # no query term dropped: exact inner products


def sparse_query(term_ids: Any, weights: Any) -> dict[int, float]:
    """A sparse query as Milvus takes it: the positive weights of in-vocabulary terms."""
    ids, ws = np.asarray(term_ids).tolist(), np.asarray(weights).tolist()
    return {int(j): float(w) for j, w in zip(ids, ws, strict=True) if w > 0 and j >= 0}


class _Remote:
    """A Milvus collection and one of its vector fields, as the build described them."""

    def __init__(self, entry: Mapping[str, Any], where: Path) -> None:
        info = entry.get("milvus")
        if not isinstance(info, dict) or not {"uri", "collection", "field"} <= set(info):
            raise CollectionError(f"{where}: the manifest's milvus entry is incomplete")
        self.uri = serving_uri(entry)
        self.collection = str(info["collection"])
        self.field = str(info["field"])
        self.index = dict(info.get("index", {}))
        self.client = client(self.uri)
        try:
            self.client.load_collection(self.collection)
        except Exception as exc:
            raise CollectionError(
                f"{where}: Milvus collection {self.collection!r} at {self.uri} cannot be "
                f"loaded ({type(exc).__name__}: {str(exc)[:200]}); is the server up, and was "
                "`twofold index build --backend milvus` run against it?"
            ) from exc

    def search(
        self, data: list[Any], k: int, params: dict[str, Any], filter: str = ""
    ) -> list[list[dict[str, Any]]]:
        result = self.client.search(
            self.collection,
            data=data,
            anns_field=self.field,
            limit=int(k),
            filter=filter,
            search_params={"metric_type": "IP", "params": params},
            output_fields=["doc_id"],
        )
        return [list(hits) for hits in result]


class MilvusSparseEngine:
    """``SparseEngine`` over a Milvus sparse field: top ``k`` by inner product."""

    name = ENGINE

    def __init__(self, remote: _Remote) -> None:
        self.remote = remote

    def search(self, term_ids: np.ndarray, weights: np.ndarray, k: int) -> list[tuple[str, float]]:
        query = sparse_query(term_ids, weights)
        if not query:
            return []
        (hits,) = self.remote.search([query], k, SPARSE_SEARCH)
        return [(str(h["entity"]["doc_id"]), float(h["distance"])) for h in hits]


class MilvusDocWeights:
    """``doc_weights`` (for explanations) read from the stored Milvus sparse vector."""

    def __init__(self, remote: _Remote) -> None:
        self.remote = remote

    def doc_weights(self, ordinal: int, term_ids: np.ndarray) -> np.ndarray:
        rows = self.remote.client.get(
            self.remote.collection, ids=[int(ordinal)], output_fields=[self.remote.field]
        )
        stored = dict(rows[0][self.remote.field]) if rows else {}
        return np.asarray(
            [float(stored.get(int(j), 0.0)) for j in np.asarray(term_ids).tolist()],
            dtype=np.float32,
        )


class MilvusSparseIndex(SparseIndex):
    """A learned-sparse sub-index served by Milvus (one engine: ``milvus``)."""

    def __init__(self, path: Path, entry: dict[str, Any]) -> None:
        if entry.get("format_version") != SPARSE_FORMAT:
            raise CollectionError(f"{path}: sparse index format_version is not supported")
        for name in ("doc_ids.txt", "vocab.txt"):
            if not (path / name).is_file():
                raise CollectionError(f"{path}: {name} missing; rebuild the collection")
        self.path = path
        self.entry = entry
        self.kind = str(entry["kind"])
        self.scale = float(entry.get("quantization", {}).get("scale", DEFAULT_SCALE))
        self.doc_ids = (path / "doc_ids.txt").read_text(encoding="utf-8").splitlines()
        self.vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        self._ordinal = {d: i for i, d in enumerate(self.doc_ids)}
        remote = _Remote(entry, path)
        self.remote = remote
        self._engines = {ENGINE: MilvusSparseEngine(remote)}
        self.native = MilvusDocWeights(remote)  # type: ignore[assignment]
        self.default_engine = ENGINE
        self.query_min_idf = float(entry.get("query_min_idf", 0.0))
        self._encoders: dict[float, QueryEncoder] = {}
        self._lock = threading.Lock()
        self._forward = None  # doc weights come from Milvus (``native`` above), never a CSR

    def doc_weights(self, ordinal: int, term_ids: Any) -> Any:
        return self.native.doc_weights(ordinal, term_ids)

    def engine(self, name: str | None = None) -> Any:
        if name not in (None, ENGINE):
            raise InputError(
                f"sparse engine {name!r} is not available: {self.path.name!r} is served by "
                f"Milvus ({self.remote.collection} at {self.remote.uri}); engines: {ENGINE}"
            )
        return self._engines[ENGINE]

    def use_engine(self, name: str) -> None:
        self.engine(name)


class MilvusDenseIndex(DenseIndex):
    """A dense sub-index served by Milvus; the query encoder is the build's (checked)."""

    def __init__(self, path: Path, entry: Mapping[str, Any], device: str = "auto") -> None:
        if entry.get("format_version") != DENSE_FORMAT:
            raise CollectionError(f"{path}: dense index format_version is not supported")
        self.path, self.entry = path, dict(entry)
        self.dim, self.count = int(entry["dim"]), int(entry["count"])
        self.remote = _Remote(entry, path)
        self.index_type = str(self.remote.index.get("type", "hnsw"))
        defaults = DENSE_DEFAULTS.get(self.index_type, {})
        self.ef = int(self.remote.index.get("ef", defaults.get("ef", 128)))
        self.nprobe = int(self.remote.index.get("nprobe", defaults.get("nprobe", 32)))
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
        if ef_search is not None:
            self.ef = int(ef_search)
        if nprobe is not None:
            self.nprobe = int(nprobe)

    def search_params(self, k: int) -> dict[str, Any]:
        """The ANN parameters of a top-``k`` search (HNSW's ``ef`` at least ``k``)."""
        return {"ef": max(self.ef, k)} if self.index_type == "hnsw" else {"nprobe": self.nprobe}

    def search_vectors(
        self, queries: np.ndarray, k: int, within: np.ndarray | None = None
    ) -> VectorHits:
        """Top-``k`` ordinals per query row from Milvus; ``within`` becomes a primary-key
        filter (answered by Milvus's filtered search, approximate under HNSW)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise InputError(f"query vectors have dim {q.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise InputError("k must be at least 1")
        kk, where = min(k, max(self.count, 1)), ""
        if within is not None:
            subset = np.unique(np.asarray(within, dtype=np.int64))
            kk = min(kk, len(subset))
            if kk == 0:
                empty = np.zeros((len(q), 0))
                return VectorHits(empty.astype(np.float32), empty.astype(np.int64))
            where = f"id in {subset.tolist()}"
        results = self.remote.search(q.tolist(), kk, self.search_params(kk), where)
        scores = np.full((len(q), kk), -np.inf, dtype=np.float32)
        ordinals = np.full((len(q), kk), -1, dtype=np.int64)
        for row, hits in enumerate(results):
            for col, h in enumerate(hits[:kk]):
                scores[row, col] = float(h["distance"])
                ordinals[row, col] = int(h["id"])
        return VectorHits(scores, ordinals)


def open_index(path: Path, entry: dict[str, Any]) -> SparseIndex | DenseIndex:
    """The Milvus-backed sub-index at ``path`` (``sparse``, ``splade`` or ``dense``)."""
    if path.name == "dense":
        return MilvusDenseIndex(path, entry)
    if path.name in ("sparse", "splade"):
        return MilvusSparseIndex(path, entry)
    raise CollectionError(f"{path}: no Milvus backend for a {path.name!r} sub-index")
