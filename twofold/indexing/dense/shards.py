"""The dense sub-index's vectors while building: shards, then one array.

``shards/NNNNN.npy`` holds ``shard_size`` rows each (float32, L2-normalized, doc-store
order), written under a temporary name and renamed when complete, so memory does not
grow with the corpus and a rerun after a crash resumes after the last complete shard.
The shards are then copied into ``vectors.npy`` (``consolidate``). Encoding runs
through the build's executor (``encoding``: here, or Ray Data), ``ENCODE_CHUNK`` texts
per encoder call from each shard's first document, whichever executor runs it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import CollectionError
from twofold.core.types import Doc
from twofold.indexing.buildctx import BuildContext
from twofold.indexing.docstore import DocStore
from twofold.indexing.encoding import (
    Chunk,
    ChunkEncoder,
    EncoderRecipe,
    Executor,
    Outputs,
    by_shard,
    shard_chunks,
)

log = logging.getLogger(__name__)
ENCODE_CHUNK = 512  # texts encoded per call (length-sorted within it)


@dataclass(frozen=True)
class DenseRecipe:
    """What loads the dense document encoder, in this process or in a Ray actor
    (``encoding.EncoderRecipe``); the settings of ``models.dense.DenseEncoder``."""

    model: str
    weights_sha256: str
    max_length: int
    batch_size: int
    query_prefix: str | None
    doc_prefix: str | None
    precision: str = "auto"  # auto | fp32 | bf16: resolved where the encoder loads

    def text(self, doc: Doc) -> str:
        return doc.contents

    def load(self, device: str) -> DenseChunks:
        from twofold.models.dense import DenseEncoder

        encoder = DenseEncoder(
            self.model,
            device=device,
            max_length=self.max_length,
            batch_size=self.batch_size,
            query_prefix=self.query_prefix,
            doc_prefix=self.doc_prefix,
            precision=self.precision,
        )
        return DenseChunks(encoder)


class DenseChunks:
    """One chunk of texts -> ``vectors`` (n, dim) float32, rows of unit norm."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {"vectors": np.asarray(self.encoder.encode_docs(texts), dtype=np.float32)}


def encoding_key(sha256: str, encoder: Any) -> dict[str, Any]:
    """What makes two encodings of one corpus the same: the weights and the settings a
    ``DenseEncoder`` reads documents with."""
    return {"sha256": sha256, "max_length": encoder.max_length, "pooling": encoder.pooling,
            "doc_prefix": encoder.doc_prefix, "precision": encoder.precision}  # fmt: skip


class ReuseVectors:
    """An ``encoding.Executor`` that answers the dense encoding from corpus vectors made
    already by the same weights and settings (``encoding_key``), such as a trainer's
    held-out check, instead of encoding the corpus again; any other recipe, or vectors
    that do not match, go to ``inner``."""

    def __init__(self, inner: Executor, vectors: np.ndarray, key: Mapping[str, Any]) -> None:
        self.inner, self.vectors, self.key = inner, vectors, dict(key)
        self.kind, self.device, self.actors = inner.kind, inner.device, inner.actors
        self.reused = False

    def encode(
        self,
        docs: DocStore,
        recipe: EncoderRecipe,
        chunks: Sequence[Chunk],
        local: ChunkEncoder,
        desc: str,
    ) -> Iterator[tuple[Chunk, Outputs]]:
        encoder = getattr(local, "encoder", None)
        same = (
            isinstance(recipe, DenseRecipe)
            and encoder is not None
            and encoding_key(recipe.weights_sha256, encoder) == self.key
            and self.vectors.shape == (len(docs), encoder.dim)
        )
        if not same:
            log.info("dense: the vectors at hand were made otherwise; encoding the corpus")
            yield from self.inner.encode(docs, recipe, chunks, local, desc)
            return
        log.info("dense: reusing the %d corpus vectors the trainer made", len(self.vectors))
        self.reused = True
        for chunk in chunks:
            rows = np.asarray(self.vectors[chunk.start : chunk.stop], dtype=np.float32)
            yield chunk, {"vectors": rows}


def shard_path(directory: Path, i: int) -> Path:
    return directory / f"{i:05d}.npy"


def complete_shards(directory: Path, shard_size: int, n: int, dim: int) -> int:
    """How many leading shards exist with the right shape (a later one is rewritten)."""
    count = 0
    n_shards = math.ceil(n / shard_size)
    while count < n_shards and shard_path(directory, count).is_file():
        rows = min(shard_size, n - count * shard_size)
        try:
            arr = np.load(shard_path(directory, count), mmap_mode="r")
        except (OSError, ValueError):
            break
        if arr.shape != (rows, dim) or arr.dtype != np.float32:
            break
        count += 1
    return count


def write_shard(directory: Path, i: int, vectors: np.ndarray) -> None:
    tmp = directory / f"{i:05d}.tmp.npy"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=vectors.shape)
    mm[:] = vectors
    mm.flush()
    del mm
    tmp.replace(shard_path(directory, i))


def encode_to_shards(
    ctx: BuildContext, recipe: DenseRecipe, local: DenseChunks, directory: Path, shard_size: int
) -> tuple[int, int]:
    """Encode the doc store into shards under ``directory`` with ``ctx``'s executor
    (``local``: the recipe loaded here); returns (reused, written)."""
    n, dim = len(ctx.docs), int(local.encoder.dim)
    directory.mkdir(parents=True, exist_ok=True)
    done = complete_shards(directory, shard_size, n, dim)
    for stale in directory.glob("*.tmp.npy"):
        stale.unlink()
    if done:
        log.info("dense: resuming after %d complete shards (%d docs)", done, done * shard_size)
    chunks = shard_chunks(n, shard_size, ENCODE_CHUNK, range(done, math.ceil(n / shard_size)))
    results = ctx.encoding().encode(ctx.docs, recipe, chunks, local, "dense: encode")
    written = 0
    for i, outputs in by_shard(results, chunks):
        write_shard(directory, i, np.concatenate([o["vectors"] for o in outputs]))
        written += 1
    return done, written


def consolidate(directory: Path, out: Path, n: int, dim: int, shard_size: int) -> np.ndarray:
    """Copy the shards in order into one ``out`` (n, dim) file; return it memory-mapped.

    Plain sequential writes, one shard in memory at a time: writing through a memmap
    would keep every written page resident in this process until it is unmapped.
    """
    tmp = out.with_name(out.stem + ".tmp.npy")
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "shape": (n, dim)}
    with tmp.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "fortran_order": False})
        for i in range(math.ceil(n / shard_size)):
            shard = np.load(shard_path(directory, i))
            fh.write(np.ascontiguousarray(shard, dtype=np.float32).tobytes())
    tmp.replace(out)
    result: np.ndarray = np.load(out, mmap_mode="r")
    if result.shape != (n, dim):
        raise CollectionError(f"{out}: wrote {result.shape}, expected {(n, dim)}")
    return result
