"""What a sub-index builder gets: the doc store, the options, the device, progress bars.

``BuildOptions`` is one ``twofold index build`` job (the CLI parses it). What concerns
one sub-index lives in its own frozen options: ``SparseOptions`` (``sparse`` and
``splade``), ``DenseOptions`` (``dense``), ``InterestOptions`` (``interests``); where
the document encoding runs, in ``ExecutorOptions``. Each value is range-checked where
it is made, and the message names the CLI flag; what needs the models or the corpus
size (model names, PQ ``m`` against the model's dimension, the cluster count against
the document count) is checked by ``indexing.preflight`` before any encoder runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from twofold.core.errors import InputError
from twofold.indexing.corpus import CorpusFormat
from twofold.indexing.docstore import DocStore
from twofold.indexing.encoding import Executor, LocalExecutor
from twofold.indexing.sparse.index import DEFAULT_SCALE, ENGINES
from twofold.indexing.sparse.seismic import SeismicParams
from twofold.models.device import PRECISIONS

T = TypeVar("T")

RETRIEVER_NAMES = ("bm25", "sparse", "splade", "dense", "interests")
DENSE_INDEXES = ("auto", "flat", "hnsw", "ivfpq")
EXECUTORS = ("local", "ray")


def _refuse(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise InputError(message)


@dataclass(frozen=True)
class SparseOptions:
    """A learned-sparse sub-index (``sparse``: inference-free, ``splade``: siamese).

    ``top_k`` / ``max_ratio``: document pruning (keep the ``top_k`` largest weights; drop
    weights below ``max_ratio`` times the document's largest). ``scale``: Lucene impacts
    are ``round(w * scale)``. ``engine``: the engine its retriever uses by default
    (``None``: by collection size, ``sparse.seismic.default_engine``); ``engines``: those
    built beside the exact ``native`` postings. ``shard_size``: documents per resumable
    shard; ``token_budget``: tokens per encoder slice. ``query_min_idf`` (``sparse``
    only): query tokens with idf below it are dropped (0: exact). ``precision``: of the
    document encoder, ``auto`` | ``fp32`` | ``bf16`` (``models.device.resolve_precision``;
    an echo causal-LM encoder stays fp32)."""

    model: str = "splade-tiny"
    top_k: int | None = None
    max_ratio: float | None = None
    scale: float = DEFAULT_SCALE
    engine: str | None = None
    engines: tuple[str, ...] = ("lucene", "seismic")
    seismic: SeismicParams = field(default_factory=SeismicParams)
    shard_size: int = 2048
    token_budget: int = 512
    query_min_idf: float = 0.0
    precision: str = "auto"

    def __post_init__(self) -> None:
        known = ", ".join(ENGINES)
        _refuse(
            [
                (self.precision in PRECISIONS, "--precision must be auto, fp32 or bf16"),
                (self.top_k is None or self.top_k >= 1, "--prune-top-k must be >= 1"),
                (
                    self.max_ratio is None or 0 <= self.max_ratio < 1,
                    "--prune-max-ratio must be in [0, 1)",
                ),
                (self.scale > 0, f"--quant-scale must be > 0, not {self.scale}"),
                (
                    self.engine is None or self.engine in ENGINES,
                    f"--sparse-engine must be one of {known}, not {self.engine!r}",
                ),
                *[
                    (e in ENGINES, f"--sparse-engines: {e!r} is not one of {known}")
                    for e in self.engines
                ],
                (
                    self.engine is None or self.engine in self.built_engines,
                    f"--sparse-engine {self.engine} is not built; add it to --sparse-engines",
                ),
                (self.shard_size >= 1, "--shard-size must be >= 1"),
                (self.token_budget >= 1, "the sparse token_budget must be >= 1"),
                (
                    self.query_min_idf >= 0,
                    f"--query-min-idf must be >= 0, not {self.query_min_idf}",
                ),
            ]
        )

    @property
    def built_engines(self) -> list[str]:
        """``native`` and ``engines``, in ``ENGINES`` order, without duplicates."""
        return [e for e in ENGINES if e == "native" or e in self.engines]


@dataclass(frozen=True)
class DenseOptions:
    """The dense sub-index: the bi-encoder ``model`` and the FAISS index over its vectors.

    ``index``: ``auto`` | ``flat`` | ``hnsw`` | ``ivfpq`` (see ``dense.index``). HNSW
    (Malkov & Yashunin 2018): ``hnsw_m`` links per node (M), ``hnsw_ef_construction`` and
    ``hnsw_ef_search`` candidate-list sizes. IVF-PQ (Jegou et al. 2011): ``ivf_nlist``
    cells, ``ivf_nprobe`` visited per query, ``pq_m`` sub-quantizers of ``pq_nbits`` bits;
    ``None`` derives each from the collection size and dimension
    (``dense.index.index_params``); ``refine_k_factor * k`` candidates are rescored
    exactly. ``query_prefix`` / ``doc_prefix`` override the model's own;
    ``shard_size``: documents per resumable shard; ``precision``: of the document
    encoder, ``auto`` | ``fp32`` | ``bf16`` (``models.device.resolve_precision``)."""

    model: str = "minilm-l6"
    index: str = "auto"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None
    ivf_nprobe: int | None = None
    pq_m: int | None = None
    pq_nbits: int | None = None
    refine_k_factor: int = 8
    query_prefix: str | None = None
    doc_prefix: str | None = None
    shard_size: int = 8192
    precision: str = "auto"

    def __post_init__(self) -> None:
        def at_least(value: int | None, low: int, flag: str) -> tuple[bool, str]:
            return value is None or value >= low, f"{flag} must be >= {low}, not {value}"

        _refuse(
            [
                (
                    self.index in DENSE_INDEXES,
                    f"--dense-index must be one of {', '.join(DENSE_INDEXES)}",
                ),
                (self.precision in PRECISIONS, "--precision must be auto, fp32 or bf16"),
                at_least(self.hnsw_m, 2, "--hnsw-m"),
                at_least(self.hnsw_ef_construction, 1, "--hnsw-ef-construction"),
                at_least(self.hnsw_ef_search, 1, "--hnsw-ef-search"),
                at_least(self.ivf_nlist, 1, "--ivf-nlist"),
                at_least(self.ivf_nprobe, 1, "--ivf-nprobe"),
                at_least(self.pq_m, 1, "--pq-m"),
                (
                    self.pq_nbits is None or 1 <= self.pq_nbits <= 16,
                    f"--pq-nbits must be between 1 and 16, not {self.pq_nbits}",
                ),
                at_least(self.refine_k_factor, 1, "--refine-k-factor"),
                (
                    self.ivf_nprobe is None
                    or self.ivf_nlist is None
                    or self.ivf_nprobe <= self.ivf_nlist,
                    f"--ivf-nprobe {self.ivf_nprobe} exceeds the --ivf-nlist {self.ivf_nlist} "
                    "cells",
                ),
                at_least(self.shard_size, 1, "--shard-size"),
            ]
        )


@dataclass(frozen=True)
class InterestOptions:
    """kNN-Embed interest clusters: ``n_clusters`` (``None``: ``round(sqrt(n))``),
    spherical k-means ``seed`` and ``niter`` iterations."""

    n_clusters: int | None = None
    seed: int = 0
    niter: int = 25

    def __post_init__(self) -> None:
        _refuse(
            [
                (self.n_clusters is None or self.n_clusters >= 1, "--clusters must be >= 1"),
                (self.niter >= 1, "the interests' k-means niter must be >= 1"),
            ]
        )


@dataclass(frozen=True)
class ExecutorOptions:
    """Where the document encoding of ``sparse``, ``splade`` and ``dense`` runs.

    ``kind``: ``local`` (this process, the default) or ``ray`` (Ray Data ``map_batches``
    over a Ray cluster, ``ray_executor``; it writes the same shards). ``address``: the
    cluster to join (``None``: ``$RAY_ADDRESS`` when set, else a local cluster started for
    the build); ``actors``: encoder actors (``None``: one per GPU of the cluster when it
    has GPUs, else one per CPU). Not part of any fingerprint: a build resumes across
    executors, since both write the same shards."""

    kind: str = "local"
    address: str | None = None
    actors: int | None = None

    def __post_init__(self) -> None:
        _refuse(
            [
                (
                    self.kind in EXECUTORS,
                    f"--executor must be one of {', '.join(EXECUTORS)}, not {self.kind!r}",
                ),
                (
                    self.kind == "ray" or (self.address is None and self.actors is None),
                    "--ray-address and --ray-actors need --executor ray",
                ),
                (self.address is None or bool(self.address.strip()), "--ray-address is empty"),
                (
                    self.actors is None or self.actors >= 1,
                    f"--ray-actors must be >= 1, not {self.actors}",
                ),
            ]
        )


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
    progress: bool = True
    sparse: SparseOptions = field(default_factory=SparseOptions)  # inference-free index
    splade: SparseOptions = field(default_factory=SparseOptions)
    dense: DenseOptions = field(default_factory=DenseOptions)
    interests: InterestOptions = field(default_factory=InterestOptions)
    executor: ExecutorOptions = field(default_factory=ExecutorOptions)

    def __post_init__(self) -> None:
        """Refuse bad values before anything is written (messages name the CLI flag)."""
        _refuse(
            [
                (self.max_docs is None or self.max_docs >= 1, "--max-docs must be >= 1"),
                (self.batch_size >= 1, "--batch-size must be >= 1"),
                (8 <= self.max_length <= 8192, "--max-length must be between 8 and 8192"),
                (self.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
                (self.splade.query_min_idf == 0, "query_min_idf applies to sparse, not splade"),
            ]
        )

    def learned_sparse(self, name: str) -> SparseOptions:
        """The options of the ``sparse`` or ``splade`` sub-index."""
        return self.sparse if name == "sparse" else self.splade

    def docs_fingerprint(self) -> dict[str, Any]:
        """The options that change the doc store."""
        return {
            "format": self.corpus_format.format,
            "id_field": self.corpus_format.id_field,
            "text_field": self.corpus_format.text_field,
            "title_field": self.corpus_format.title_field,
            "skip_invalid": self.skip_invalid,
            "max_docs": self.max_docs,
        }

    def subindex_fingerprint(self, name: str) -> dict[str, Any]:
        """The options that change sub-index ``name`` built over a given doc store (as
        JSON would give them back, so that a recorded one compares equal)."""
        own: dict[str, Any] = {}
        if name in ("sparse", "splade"):
            own = {"max_length": self.max_length, **asdict(self.learned_sparse(name))}
        elif name == "dense":
            own = {"max_length": self.max_length, **asdict(self.dense)}
        elif name == "interests":
            own = asdict(self.interests)
        loaded: dict[str, Any] = json.loads(json.dumps(own))
        return loaded

    def fingerprint(self) -> dict[str, Any]:
        """The options that change what is built (recorded in the manifest; the resume
        state compares the doc store's part and each sub-index's part on its own)."""
        return {
            "retrievers": list(self.retrievers),
            "docs": self.docs_fingerprint(),
            **{name: self.subindex_fingerprint(name) for name in RETRIEVER_NAMES},
        }


@dataclass
class BuildContext:
    """``device``: where this process runs models (resolved: ``cpu`` or ``cuda``);
    ``executor``: where document encoding runs (``None``: here, on ``device``)."""

    docs: DocStore
    options: BuildOptions
    device: str
    executor: Executor | None = None

    def encoding(self) -> Executor:
        """The executor of the sharded document encoding (``encoding``)."""
        if self.executor is None:
            self.executor = LocalExecutor(self.device, self.options.progress)
        return self.executor

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
