"""Interest clusters (kNN-Embed, El-Kishky et al. 2022): sub-index ``interests``.

Spherical k-means over the dense document embeddings (FAISS ``Kmeans(spherical=True)``,
on a GPU when FAISS sees one and the build device is not ``cpu``) gives ``C``
centroids ``mu_c`` ("interests"). Each document belongs to the cluster of its nearest
centroid by inner product (= cosine: the vectors are unit length).

Layout (``interests/``):

- ``centroids.npy``   float32 (C, d), rows of unit norm
- ``assignments.npy`` int32 (n,), the cluster of each doc-store ordinal
- ``ivf.faiss``       ``IndexIVFFlat`` (inner product) whose coarse quantizer holds
  exactly these centroids and whose inverted list ``c`` holds cluster ``c``'s documents
  (ids = doc-store ordinals). Searching within one cluster is ``search_preassigned``
  with that one list (``nprobe = 1``); searching all lists is exact search. The flat
  codes are a second copy of the vectors (``n * d * 4`` bytes), which also lets the
  index return any document's embedding without the dense sub-index.

``C`` defaults to ``round(sqrt(n))`` clipped to ``[1, n]`` (``--clusters``,
``InterestOptions.n_clusters``, overrides it; 37 for Cranfield's 1,400 documents, 72 for
SciFact's 5,183). ``InterestOptions`` also holds the k-means ``seed`` (default 0) and
``niter`` (iterations, default 25).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from twofold.core.errors import CollectionError, InputError
from twofold.indexing.buildctx import BuildContext, InterestOptions

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_SEED = InterestOptions().seed
DEFAULT_NITER = InterestOptions().niter

FloatArray = npt.NDArray[np.float32]


def default_n_clusters(n_docs: int) -> int:
    """``round(sqrt(n))`` clipped to ``[1, n]``."""
    return max(1, min(n_docs, round(math.sqrt(n_docs))))


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        from twofold.core.errors import DependencyError

        raise DependencyError("interests need FAISS: pip install faiss-cpu") from exc
    return faiss


def spherical_kmeans(
    vectors: FloatArray,
    n_clusters: int,
    *,
    seed: int = DEFAULT_SEED,
    niter: int = DEFAULT_NITER,
    use_gpu: bool = False,
) -> tuple[FloatArray, float]:
    """Unit-norm centroids (C, d) of (n, d) unit vectors, and the final objective
    (sum of each point's cosine to its centroid)."""
    faiss = _faiss()
    n, d = vectors.shape
    if not 1 <= n_clusters <= n:
        raise InputError(f"n_clusters must be between 1 and the {n} documents, not {n_clusters}")
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=niter,
        spherical=True,
        seed=seed,
        gpu=use_gpu,
        min_points_per_centroid=1,  # small corpora are fine; no FAISS warning
        max_points_per_centroid=1 << 30,  # train on every document, no sampling
    )
    km.train(np.ascontiguousarray(vectors, dtype=np.float32))
    centroids = np.asarray(km.centroids, dtype=np.float32).reshape(n_clusters, d)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    unit: FloatArray = (centroids / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    objective = float(km.obj[-1]) if len(km.obj) else float("nan")
    return unit, objective


def build_ivf(vectors: FloatArray, centroids: FloatArray) -> tuple[Any, npt.NDArray[np.int32]]:
    """An inner-product ``IndexIVFFlat`` over ``vectors`` with ``centroids`` as its coarse
    quantizer; returns it and each vector's list (= nearest centroid)."""
    faiss = _faiss()
    n, d = vectors.shape
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    ivf = faiss.IndexIVFFlat(quantizer, d, centroids.shape[0], faiss.METRIC_INNER_PRODUCT)
    ivf.is_trained = True
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    _, nearest = quantizer.search(x, 1)
    assignments = nearest[:, 0].astype(np.int32)
    ivf.add_with_ids(x, np.arange(n, dtype=np.int64))
    return ivf, assignments


def write_interests(
    vectors: FloatArray,
    out: Path,
    n_clusters: int | None = None,
    *,
    seed: int = DEFAULT_SEED,
    niter: int = DEFAULT_NITER,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Cluster unit vectors (n, d) and write the sub-index into ``out``; returns the
    manifest entry. ``n_clusters=None`` -> :func:`default_n_clusters`."""
    faiss = _faiss()
    n, d = vectors.shape
    if n == 0:
        raise InputError("no document vectors to cluster")
    chosen = default_n_clusters(n) if n_clusters is None else int(n_clusters)
    centroids, objective = spherical_kmeans(
        vectors, chosen, seed=seed, niter=niter, use_gpu=use_gpu
    )
    ivf, assignments = build_ivf(vectors, centroids)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "centroids.npy", centroids)
    np.save(out / "assignments.npy", assignments)
    faiss.write_index(ivf, str(out / "ivf.faiss"))
    sizes = np.bincount(assignments, minlength=chosen)
    return {
        "format_version": FORMAT_VERSION,
        "n_clusters": chosen,
        "n_clusters_rule": "option" if n_clusters is not None else "round(sqrt(n))",
        "dim": d,
        "doc_count": n,
        "seed": seed,
        "niter": niter,
        "spherical": True,
        "kmeans_device": "gpu" if use_gpu else "cpu",
        "mean_cosine_to_centroid": round(objective / n, 6),
        "cluster_size": {
            "min": int(sizes.min()),
            "max": int(sizes.max()),
            "empty": int((sizes == 0).sum()),
        },
    }


def read_dense_vectors(dense_dir: Path) -> FloatArray:
    """The dense sub-index's document vectors: ``dense/vectors.npy``, float32 (n, d) in
    doc-store ordinal order, unit rows (memory-mapped, read-only)."""
    path = dense_dir / "vectors.npy"
    if not path.is_file():
        raise CollectionError(
            f"{dense_dir} has no vectors.npy; build the dense sub-index first "
            "(--retrievers dense,interests)"
        )
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise CollectionError(f"cannot read {path}: {exc}") from None
    if arr.ndim != 2 or arr.dtype != np.float32:
        raise CollectionError(f"{path} is {arr.dtype}{arr.shape}, expected float32 (n, d)")
    out: FloatArray = arr
    return out


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    """Cluster the vectors of the dense sub-index built beside ``out`` (``out.parent/dense``)."""
    vectors = read_dense_vectors(out.parent / "dense")
    if vectors.shape[0] != len(ctx.docs):
        raise CollectionError(
            f"dense vectors ({vectors.shape[0]}) and doc store ({len(ctx.docs)}) disagree"
        )
    use_gpu = ctx.device != "cpu" and _faiss().get_num_gpus() > 0
    o = ctx.options.interests
    log.info("interests: spherical k-means on %s", "GPU" if use_gpu else "CPU")
    return write_interests(
        vectors,
        out,
        o.n_clusters,
        seed=o.seed,
        niter=o.niter,
        use_gpu=use_gpu,
    )


class InterestIndex:
    """An opened ``interests`` sub-index. Safe to share between threads (searches pass
    their own FAISS parameters; nothing is mutated after opening)."""

    def __init__(self, path: Path, entry: dict[str, Any]) -> None:
        if entry.get("format_version") != FORMAT_VERSION:
            raise CollectionError(
                f"{path}: interests format_version {entry.get('format_version')!r} is not "
                f"{FORMAT_VERSION}; rebuild with --retrievers dense,interests"
            )
        faiss = _faiss()
        for name in ("centroids.npy", "assignments.npy", "ivf.faiss"):
            if not (path / name).is_file():
                raise CollectionError(f"{path} lacks {name}; rebuild the interests sub-index")
        self.path = path
        self.centroids: FloatArray = np.load(path / "centroids.npy")
        self.assignments: npt.NDArray[np.int32] = np.load(path / "assignments.npy")
        self.ivf = faiss.read_index(str(path / "ivf.faiss"))
        self.ivf.make_direct_map()
        self.ivf.nprobe = 1  # never changed: search_all passes its own parameters
        self.n_clusters = int(self.centroids.shape[0])
        self.dim = int(self.centroids.shape[1])
        if self.ivf.nlist != self.n_clusters or self.ivf.ntotal != len(self.assignments):
            raise CollectionError(f"{path}: ivf.faiss does not match centroids/assignments")
        self.sizes = np.bincount(self.assignments, minlength=self.n_clusters)
        self._faiss = faiss

    def __len__(self) -> int:
        return int(self.ivf.ntotal)

    @property
    def doc_count(self) -> int:
        return len(self)

    def vectors(self, ordinals: npt.ArrayLike) -> FloatArray:
        """Stored document embeddings (len(ordinals), d) for doc-store ordinals."""
        idx = np.ascontiguousarray(np.asarray(ordinals, dtype=np.int64).reshape(-1))
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise InputError(f"document ordinals must lie in [0, {len(self)})")
        out: FloatArray = np.asarray(self.ivf.reconstruct_batch(idx), dtype=np.float32)
        return out.reshape(idx.shape[0], self.dim)

    def search_in_clusters(
        self, queries: FloatArray, clusters: npt.ArrayLike, k: int
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Row ``i`` of (M, d) ``queries`` searched within cluster ``clusters[i]`` only
        (``nprobe = 1`` on that inverted list): (M, k) scores and ordinals, -1 padded."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        assign = np.asarray(clusters, dtype=np.int64).reshape(-1, 1)
        dist = np.zeros(assign.shape, dtype=np.float32)
        # search_preassigned reads ``ivf.nprobe`` keys per row: pinned to 1 at open
        scores, ids = self.ivf.search_preassigned(q, int(k), assign, dist)
        return scores, ids

    def search_all(self, queries: FloatArray, k: int) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Exact inner-product search over every document (all lists probed)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        params = self._faiss.SearchParametersIVF(nprobe=self.n_clusters)
        scores, ids = self.ivf.search(q, int(k), params=params)
        return scores, ids


def open_index(path: Path, entry: dict[str, Any]) -> InterestIndex:
    return InterestIndex(path, entry)
