"""What a sub-index builder gets: the doc store, the options, the device, progress bars."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twofold.indexing.corpus import CorpusFormat
from twofold.indexing.docstore import DocStore

T = TypeVar("T")

RETRIEVER_NAMES = ("bm25", "sparse", "splade", "dense", "interests")
DENSE_INDEXES = ("auto", "flat", "hnsw", "ivfpq")


@dataclass(frozen=True)
class BuildOptions:
    """The parameters of one ``twofold index build`` job (parsed by the CLI)."""

    retrievers: tuple[str, ...] = ("bm25",)
    corpus_format: CorpusFormat = field(default_factory=CorpusFormat)
    skip_invalid: bool = False
    max_docs: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 32
    max_length: int = 256  # tokens per document for the encoders
    sparse_model: str = "splade-tiny"  # MLM doc encoder of the inference-free index
    splade_model: str = "splade-tiny"
    dense_model: str = "minilm-l6"
    dense_index: str = "auto"  # auto | flat | hnsw | ivfpq
    n_clusters: int | None = None  # kNN-Embed interests; None = sqrt(N) rule
    progress: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse bad values before anything is written (messages name the CLI flag)."""
        from twofold.core.errors import InputError

        checks = [
            (self.max_docs is None or self.max_docs >= 1, "--max-docs must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (8 <= self.max_length <= 8192, "--max-length must be between 8 and 8192"),
            (self.n_clusters is None or self.n_clusters >= 1, "--clusters must be >= 1"),
            (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
            (
                self.dense_index in DENSE_INDEXES,
                f"--dense-index must be one of {', '.join(DENSE_INDEXES)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def fingerprint(self) -> dict[str, Any]:
        """The options that change what is built (used to decide whether to resume)."""
        return {
            "retrievers": list(self.retrievers),
            "format": self.corpus_format.format,
            "id_field": self.corpus_format.id_field,
            "text_field": self.corpus_format.text_field,
            "title_field": self.corpus_format.title_field,
            "skip_invalid": self.skip_invalid,
            "max_docs": self.max_docs,
            "max_length": self.max_length,
            "sparse_model": self.sparse_model,
            "splade_model": self.splade_model,
            "dense_model": self.dense_model,
            "dense_index": self.dense_index,
            "n_clusters": self.n_clusters,
            "extra": dict(self.extra),
        }


@dataclass
class BuildContext:
    docs: DocStore
    options: BuildOptions
    device: str  # resolved: "cpu" or "cuda"

    def progress(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        if not self.options.progress:
            yield from items
            return
        from tqdm import tqdm

        yield from tqdm(
            items,
            desc=desc,
            total=total if total is not None else len(self.docs),
            unit="doc",
            dynamic_ncols=True,
        )
