"""The pruned sparse engine: Seismic (Bruch, Nardini, Rulli, Venturini, SIGIR 2024).

Seismic keeps, per term, only the highest-weight postings (a global budget of
``n_postings`` per term on average, at most ``max_fraction * n_postings`` in one list),
cuts each list into blocks of similar documents (random k-means on ``centroid_fraction``
of the list) and summarizes every block by its per-term maxima, keeping
``summary_energy`` of the summary's L1 mass. A query skips every block whose summary
dot product cannot beat ``heap_factor`` times the current k-th score. So it scores a
small part of the corpus, and may miss a document the exact engine finds.

Here Seismic proposes ``candidates(k)`` documents and we score them exactly from the
CSR forward index (``forward/``), so reported scores are the exact float dot products
of the native engine (Seismic stores weights as f16) and explanations agree with them.

On disk, inside the sparse sub-index: ``seismic/index.index.seismic`` (Seismic's own
serialization, ``pyseismic-lsr``), built by ``build_seismic`` from the shards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from twofold.core.errors import CollectionError, DependencyError

log = logging.getLogger(__name__)

INDEX_STEM = "seismic/index"  # Seismic appends ``.index.seismic``


@dataclass(frozen=True)
class SeismicParams:
    """Build and query knobs (names as in Seismic).

    - ``n_postings``: postings kept per term on average; 0 chooses by corpus size
      (``auto_n_postings``) at build time, and the manifest records the number used.
    - ``query_cut``: the query's heaviest terms searched (0: all of them).
    - ``heap_factor``: the lower, the more blocks are scanned (slower, closer to exact).
    - ``candidate_factor``: Seismic proposes ``candidate_factor * k`` documents (at least
      ``min_candidates``), scored exactly.

    The defaults are measured (``bench/bench_seismic_sweep.py``, BENCHMARKS.md "Seismic's
    knobs"): ``query_cut`` 10 (Seismic's own advice) is 1.6-2.4x faster than every term
    on the synthetic corpora at 100k and 1M documents, at top-10 overlap >= 0.995, and
    leaves SciFact's and Cranfield's nDCG@10 within 0.0001 of exact; ``heap_factor`` 1.0
    is faster still but lower in overlap (0.989 at 1M)."""

    n_postings: int = 0
    centroid_fraction: float = 0.1
    min_cluster_size: int = 2
    summary_energy: float = 0.4
    max_fraction: float = 1.5
    doc_cut: int = 15
    query_cut: int = 10
    heap_factor: float = 0.9
    candidate_factor: int = 2
    min_candidates: int = 20

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SeismicParams:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


N_POSTINGS_MIN, N_POSTINGS_MAX = 1000, 4000


def auto_n_postings(docs: int) -> int:
    """``n_postings`` for ``docs`` documents: one per 100 documents, from 1,000 to 4,000.

    Measured on the synthetic corpora (about 250 terms a document): at 100k documents,
    1,000 postings a term answer 5x faster than 4,000 at top-10 overlap 0.9965 (4,000
    prunes nothing there, so Seismic scans whole lists); at 1M, 2,000 fall to overlap
    0.975 and 4,000 keep 0.9955. Seismic's authors use 3,000-6,000 at 8.8M documents."""
    return min(N_POSTINGS_MAX, max(N_POSTINGS_MIN, docs // 100))


def _seismic() -> Any:
    try:
        import seismic
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise DependencyError(
            "the seismic engine needs pyseismic-lsr: pip install pyseismic-lsr==0.5.4"
        ) from exc
    return seismic


def build_seismic(
    out: Path, shards: Iterable[sp.csr_matrix], vocab_size: int, params: SeismicParams
) -> dict[str, Any]:
    """Build ``out/seismic`` from CSR shards (rows = doc ordinals in order); returns its
    manifest entry. Seismic names a document by the string of its ordinal."""
    seismic = _seismic()
    dataset = seismic.SeismicDataset(dim=vocab_size)
    row = 0
    for shard in shards:
        m = shard.tocsr()
        m.sort_indices()
        ids = [str(i) for i in range(row, row + m.shape[0])]
        dataset.add_documents_by_id(
            ids,
            m.indices.astype(np.int64),
            m.data.astype(np.float32),
            m.indptr.astype(np.int64),
        )
        row += m.shape[0]
    (out / "seismic").mkdir(parents=True, exist_ok=True)
    params = replace(params, n_postings=params.n_postings or auto_n_postings(row))
    if dataset.len == 0:
        return {"documents": 0, **params.to_json()}
    index = seismic.SeismicIndex.build_from_dataset(
        dataset,
        n_postings=params.n_postings,
        centroid_fraction=params.centroid_fraction,
        min_cluster_size=params.min_cluster_size,
        summary_energy=params.summary_energy,
        max_fraction=params.max_fraction,
        doc_cut=params.doc_cut,
    )
    index.save(str(out / INDEX_STEM))
    return {"documents": int(index.len), "postings": int(index.nnz), **params.to_json()}


class ForwardIndex:
    """The CSR forward index (``forward/``): each document's terms, memory-mapped."""

    def __init__(self, path: Path) -> None:
        fwd = path / "forward"
        if not (fwd / "indptr.npy").is_file():
            raise CollectionError(
                f"{path} has no forward index (forward/ missing; built before Twofold "
                "wrote one): rebuild the collection to use the seismic engine"
            )
        self.indptr = np.load(fwd / "indptr.npy", mmap_mode="r")
        self.terms = np.load(fwd / "terms.npy", mmap_mode="r")
        self.weights = np.load(fwd / "weights.npy", mmap_mode="r")

    def close(self) -> None:
        """Drop the memory maps (unmapped once no search holds a slice of them)."""
        self.indptr = self.terms = self.weights = np.zeros(1, dtype=np.int64)

    def doc_weights(self, ordinal: int, term_ids: np.ndarray) -> np.ndarray:
        """(len(term_ids),) float32 w_d[j] of one document (0 where absent)."""
        s, e = int(self.indptr[ordinal]), int(self.indptr[ordinal + 1])
        terms, weights = self.terms[s:e], self.weights[s:e]
        ids = np.asarray(term_ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(terms, ids), max(e - s - 1, 0))
        found = (e > s) & (terms[pos] == ids) if e > s else np.zeros(len(ids), dtype=bool)
        out = np.zeros(len(ids), dtype=np.float32)
        out[found] = weights[pos[found]]
        return out

    def scores(self, ordinals: np.ndarray, term_ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(len(ordinals),) float32 exact ``sum_j q_j * w_d[j]`` for the given documents.

        Accumulated in float32 in ascending term order, as the native engine sums a query
        whose term ids ascend (what the encoders give), so the scores agree bitwise."""
        order = np.argsort(np.asarray(term_ids, dtype=np.int64), kind="stable")
        ids = np.asarray(term_ids, dtype=np.int64)[order]
        q = np.asarray(weights, dtype=np.float32)[order]
        ords = np.asarray(ordinals, dtype=np.int64)
        out = np.zeros(len(ords), dtype=np.float32)
        if not len(ords) or not len(ids):
            return out
        starts, ends = self.indptr[ords], self.indptr[ords + 1]
        lengths = (ends - starts).astype(np.int64)
        rows = np.repeat(np.arange(len(ords)), lengths)
        offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        flat = np.repeat(starts, lengths) + offsets
        terms = np.asarray(self.terms[flat], dtype=np.int64)
        pos = np.minimum(np.searchsorted(ids, terms), len(ids) - 1)
        match = ids[pos] == terms
        np.add.at(out, rows[match], q[pos[match]] * self.weights[flat[match]])
        return out


class SeismicEngine:
    """Seismic proposes candidates; the forward index scores them exactly."""

    name = "seismic"

    def __init__(
        self, path: Path, doc_ids: list[str], vocab_size: int, params: SeismicParams
    ) -> None:
        file = path / (INDEX_STEM + ".index.seismic")
        self.forward = ForwardIndex(path)
        self.doc_ids = doc_ids
        self.vocab_size = vocab_size
        self.params = params
        self._index: Any = None
        if len(doc_ids):
            if not file.is_file():
                raise CollectionError(
                    f"{path} has no Seismic index ({file.name} missing): rebuild the "
                    "collection with the seismic engine"
                )
            self._string = _seismic().get_seismic_string()
            self._index = _seismic().SeismicIndex.load(str(file))

    def close(self) -> None:
        self.forward.close()
        self._index = None

    def candidates(self, k: int) -> int:
        return max(self.params.candidate_factor * k, self.params.min_candidates)

    def search(self, term_ids: np.ndarray, weights: np.ndarray, k: int) -> list[tuple[str, float]]:
        ids = np.asarray(term_ids, dtype=np.int64)
        q = np.asarray(weights, dtype=np.float32)
        keep = (ids >= 0) & (ids < self.vocab_size) & (q > 0)
        ids, q = ids[keep], q[keep]
        if self._index is None or k <= 0 or not len(ids):
            return []
        cut = self.params.query_cut or len(ids)
        comps = np.asarray([str(j) for j in ids.tolist()], dtype=self._string)
        found = self._index.search("q", comps, q, self.candidates(k), cut, self.params.heap_factor)
        ordinals = np.asarray([int(d) for _, _, d in found], dtype=np.int64)
        if not len(ordinals):
            return []
        exact = self.forward.scores(ordinals, ids, q)
        hit = exact > 0
        ordinals, exact = ordinals[hit], exact[hit]
        order = np.lexsort((ordinals, -exact))[:k]
        return [(self.doc_ids[int(ordinals[i])], float(exact[i])) for i in order]
