"""The sub-index registry: retriever name -> the module that builds and opens it.

Each module exposes ``build(ctx: BuildContext, out: Path) -> dict`` (its manifest entry)
and ``open_index(path: Path, entry: dict) -> object``. Modules load lazily, so a
collection with only BM25 never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from twofold.core.registry import Registry


@dataclass(frozen=True)
class SubIndexSpec:
    name: str
    module: str
    description: str
    requires: tuple[str, ...] = ()

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


SUBINDEXES: Registry[SubIndexSpec] = Registry("retriever")
SUBINDEXES.register(
    "bm25",
    SubIndexSpec(
        "bm25", "twofold.indexing.lucene.bm25", "BM25 on Lucene (k1=0.9, b=0.4, title+text)"
    ),
)
SUBINDEXES.register(
    "dense",
    SubIndexSpec("dense", "twofold.indexing.dense.index", "dense bi-encoder vectors + FAISS (IP)"),
)
SUBINDEXES.register(
    "interests",
    SubIndexSpec(
        "interests",
        "twofold.indexing.dense.interests",
        "kNN-Embed interest clusters: spherical k-means over the dense vectors + IVF lists",
        requires=("dense",),
    ),
)
SUBINDEXES.register(
    "sparse",
    SubIndexSpec(
        "sparse",
        "twofold.indexing.sparse.subindex",
        "inference-free learned sparse: MLM doc encoder, idf query side (native + Lucene impact)",
    ),
)
SUBINDEXES.register(
    "splade",
    SubIndexSpec(
        "splade",
        "twofold.indexing.sparse.splade",
        "siamese SPLADE: MLM activation on docs and queries (native + Lucene impact)",
    ),
)
