"""How a builder's document encoding runs: chunks of documents through an encoder, in
this process (``LocalExecutor``) or as Ray Data ``map_batches`` (``ray_executor``).

A builder that shards its work (``sparse``, ``splade``, ``dense``) cuts the documents of
each unfinished shard into chunks, ``shard_chunks``: a shard's documents in slices of
``chunk_size`` from its first one. A chunk is one encoder call, and its documents are
batched by length within it, so the chunk plan fixes every batch the model sees. Both
executors take the same plan and run the same ``EncoderRecipe`` (a picklable frozen
dataclass: model name, weights' sha256, settings) on each chunk; the builder gets the
outputs back in plan order (``by_shard``) and writes each shard itself. So the shards
do not depend on the executor: the same batches through the same code on the same
kind of device.

A chunk encoder returns a ``dict`` of numpy arrays (e.g. CSR parts, vectors); arrays
travel through Arrow on Ray, which keeps their dtype and shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from twofold.core.errors import CollectionError
from twofold.core.types import Doc
from twofold.indexing.docstore import DocStore

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Chunk:
    """Documents ``[start, stop)`` (doc-store ordinals) of shard ``shard``."""

    shard: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def shard_chunks(n: int, shard_size: int, chunk_size: int, shards: Iterable[int]) -> list[Chunk]:
    """The chunks of ``shards`` (ascending) over ``n`` documents cut into shards of
    ``shard_size``: each shard's documents in slices of ``chunk_size`` from its first
    (the last slice of a shard may be shorter)."""
    chunks: list[Chunk] = []
    for i in shards:
        first, end = i * shard_size, min(n, (i + 1) * shard_size)
        chunks.extend(Chunk(i, s, min(s + chunk_size, end)) for s in range(first, end, chunk_size))
    return chunks


class ChunkEncoder(Protocol):
    def __call__(self, texts: list[str]) -> Outputs: ...


class EncoderRecipe(Protocol):
    """What loads a chunk encoder anywhere: picklable, with the weights it expects."""

    @property
    def model(self) -> str: ...

    @property
    def weights_sha256(self) -> str: ...

    def text(self, doc: Doc) -> str: ...

    def load(self, device: str) -> ChunkEncoder: ...


class Executor(Protocol):
    """Runs a recipe over chunks; ``kind`` is ``local`` or ``ray``, ``device`` where the
    encoders run (``cpu`` or ``cuda``), ``actors`` how many encode at once."""

    kind: str
    device: str
    actors: int

    def encode(
        self,
        docs: DocStore,
        recipe: EncoderRecipe,
        chunks: Sequence[Chunk],
        local: ChunkEncoder,
        desc: str,
    ) -> Iterator[tuple[Chunk, Outputs]]:
        """Each chunk's outputs, in the order of ``chunks``. ``local``: the recipe already
        loaded in this process (the local executor encodes with it)."""
        ...


def chunk_texts(docs: DocStore, recipe: EncoderRecipe, chunk: Chunk) -> list[str]:
    return [recipe.text(d) for d in docs.slice(chunk.start, chunk.stop)]


class LocalExecutor:
    """Encode in this process, one chunk after the other, with the builder's encoder."""

    kind = "local"
    actors = 1

    def __init__(self, device: str, progress: bool = True) -> None:
        self.device, self.progress = device, progress

    def encode(
        self,
        docs: DocStore,
        recipe: EncoderRecipe,
        chunks: Sequence[Chunk],
        local: ChunkEncoder,
        desc: str,
    ) -> Iterator[tuple[Chunk, Outputs]]:
        with doc_progress(self.progress, desc, sum(c.size for c in chunks)) as advance:
            for chunk in chunks:
                yield chunk, local(chunk_texts(docs, recipe, chunk))
                advance(chunk.size)


@contextmanager
def doc_progress(on: bool, desc: str, total: int) -> Iterator[Callable[[int], None]]:
    """``advance(n)``: move a progress bar counted in documents (``tqdm``) by ``n``; a
    no-op when ``on`` is false."""
    if not on:
        yield lambda n: None
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, total=total, unit="doc", dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


def by_shard(
    results: Iterable[tuple[Chunk, Outputs]], chunks: Sequence[Chunk]
) -> Iterator[tuple[int, list[Outputs]]]:
    """Group the outputs of ``chunks`` (in plan order) per shard: ``(shard, outputs)``
    once the shard's last chunk is in. Outputs out of plan order are an error."""
    last = {c.shard: c.start for c in chunks}  # the start of each shard's last chunk
    expected = iter(chunks)
    held: list[Outputs] = []
    for chunk, outputs in results:
        want = next(expected, None)
        if want is None or (chunk.shard, chunk.start) != (want.shard, want.start):
            raise CollectionError(
                f"encoder outputs came back out of order: chunk at document {chunk.start} "
                f"where {want.start if want else 'none'} was expected"
            )
        held.append(outputs)
        if chunk.start == last[chunk.shard]:
            yield chunk.shard, held
            held = []
    if next(expected, None) is not None:
        raise CollectionError("the encoder returned fewer chunks than were sent")
