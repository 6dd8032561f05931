"""The dense query adapter stored in a collection (Adapted Dense Retrieval: "Augmented
Embeddings for Custom Retrievals", Khatry et al. 2023, arXiv 2310.05380).

A low-rank residual map over frozen embeddings, ``f(e) = normalize(e + B (A e))`` with
``A`` (r, dim) and ``B`` (dim, r), so the adapter starts as the identity (``B = 0``) and
changes the geometry only along ``r`` directions. Two variants:

- ``query``: only query embeddings are mapped; the stored document vectors and their
  FAISS index are used as built.
- ``both``: queries and documents each get their own map; the stored document vectors are
  transformed once, at training time, into ``adapter/docs.npy`` (no text re-encoded), and
  ``dense`` searches those exactly (inner product, numpy).

On disk, ``COLLECTION/adapter/``: ``adapter.npz`` (``query_a``, ``query_b`` and for
``both`` ``doc_a``, ``doc_b``, float32), ``docs.npy`` for ``both``, and ``adapter.json``
(format version, variant, rank, dim, the dense encoder's sha256 it was trained over, and
how it was trained), written last. The folder is published with a rename of a staged
sibling; ``dense`` uses it whenever it is there and matches the dense index.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import CollectionError, InputError

FORMAT_VERSION = 1
FOLDER = "adapter"
VARIANTS = ("query", "both")


def normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def residual(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``normalize(x + (x A^T) B^T)`` row-wise: x (n, dim), a (r, dim), b (dim, r)."""
    x = np.asarray(x, dtype=np.float32)
    return normalize_rows(x + (x @ a.T) @ b.T)


@dataclass(frozen=True)
class Adapter:
    """An opened adapter: ``queries(e)`` maps query embeddings; for the ``both`` variant
    ``docs`` holds the transformed document vectors (memory-mapped)."""

    variant: str
    query_a: np.ndarray
    query_b: np.ndarray
    info: Mapping[str, Any]
    docs: np.ndarray | None = None

    def queries(self, vectors: np.ndarray) -> np.ndarray:
        return residual(vectors, self.query_a, self.query_b)

    def search(
        self, queries: np.ndarray, k: int, within: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (scores, ordinals) over the transformed docs (``both`` only),
        optionally restricted to the ordinals ``within``."""
        if self.docs is None:
            raise InputError("only the 'both' adapter holds transformed documents")
        from twofold.indexing.dense.index import exact_within

        ordinals = np.arange(len(self.docs)) if within is None else np.asarray(within)
        hits = exact_within(self.docs, np.atleast_2d(queries), k, ordinals.astype(np.int64))
        return hits.scores, hits.ordinals


def write_adapter(
    collection_path: Path,
    variant: str,
    weights: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
    doc_vectors: np.ndarray | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Publish ``COLLECTION/adapter/`` (staged sibling, then a rename); the transformed doc
    vectors are written for ``both`` from ``doc_vectors`` (the stored dense vectors);
    ``extra_files`` (name -> text) go in beside them."""
    if variant not in VARIANTS:
        raise InputError(f"adapter variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    target = collection_path / FOLDER
    staging = collection_path / f".{FOLDER}.partial"
    old = collection_path / f".{FOLDER}.old"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    np.savez(staging / "adapter.npz", **arrays)  # type: ignore[arg-type]
    if variant == "both":
        if doc_vectors is None:
            raise InputError("the 'both' adapter needs the stored doc vectors")
        out = np.lib.format.open_memmap(
            staging / "docs.npy", mode="w+", dtype=np.float32, shape=doc_vectors.shape
        )
        for start in range(0, len(doc_vectors), 65536):
            chunk = np.asarray(doc_vectors[start : start + 65536])
            out[start : start + len(chunk)] = residual(chunk, arrays["doc_a"], arrays["doc_b"])
        out.flush()
        del out
    for name, text in (extra_files or {}).items():  # e.g. MODEL_CARD.md, training_args.json
        (staging / Path(name).name).write_text(text, encoding="utf-8")
    meta = {"format_version": FORMAT_VERSION, "variant": variant, **info}
    (staging / "adapter.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def remove_adapter(collection_path: Path) -> None:
    """Take the adapter out of the collection (``dense`` goes back to plain embeddings)."""
    shutil.rmtree(collection_path / FOLDER, ignore_errors=True)


def read_adapter(
    collection_path: Path, dim: int, count: int, encoder_sha: str | None
) -> Adapter | None:
    """The collection's adapter, or None when it has none; a mismatch with the dense index
    (dim, count, encoder weights) is refused with a message saying what to do."""
    folder = collection_path / FOLDER
    meta_file = folder / "adapter.json"
    if not meta_file.is_file():
        return None
    where = f"{folder}"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        arrays = np.load(folder / "adapter.npz")
        qa, qb = arrays["query_a"], arrays["query_b"]
    except (OSError, ValueError, KeyError) as exc:
        raise CollectionError(
            f"{where}: unreadable adapter ({exc}); retrain or remove it"
        ) from None
    redo = "retrain it (`twofold train adapter`) or delete the folder"
    if meta.get("format_version") != FORMAT_VERSION:
        raise CollectionError(f"{where}: adapter format {meta.get('format_version')!r}; {redo}")
    if qa.shape[1] != dim or qb.shape[0] != dim or meta.get("dim") != dim:
        raise CollectionError(
            f"{where}: adapter dim does not match the dense index ({dim}); {redo}"
        )
    if encoder_sha is not None and meta.get("encoder_sha256") not in (None, encoder_sha):
        raise CollectionError(f"{where}: adapter was trained over other dense weights; {redo}")
    docs = None
    if meta.get("variant") == "both":
        try:
            docs = np.load(folder / "docs.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise CollectionError(f"{where}: cannot read docs.npy ({exc}); {redo}") from None
        if docs.shape != (count, dim):
            raise CollectionError(f"{where}: docs.npy is {docs.shape}, the index ({count}, {dim})")
    return Adapter(str(meta.get("variant")), qa, qb, meta, docs)
