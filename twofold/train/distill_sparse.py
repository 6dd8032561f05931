"""Training data for the inference-free sparse encoder: listwise groups from a collection,
a BEIR split and a heterogeneous teacher ensemble of the collection's retrievers.

Per training query (Geng et al. 2024, arXiv 2411.04403; DESIGN.md, Training):

1. every teacher retriever (``bm25``, ``dense``, ``splade``, whichever the collection
   has) returns its top ``depth`` hits;
2. the teacher logit of a candidate is ``scale * mean_teacher(min-max score)``, a
   document a teacher did not return getting 0 from it
   (:func:`twofold.train.distill.teacher_scores`; ``scale`` = 30, an inverse softmax
   temperature);
3. the group: the judged positives (grade >= 1) that a teacher returned (best teacher
   score first, at most ``group_size``), then the best remaining candidates by teacher
   score, ``group_size`` documents in all. A query with fewer candidates is skipped.

The query-side idf (what the student's ranking loss multiplies ``w`` by, and what the
trained model ships as ``idf.json``) is the collection's ``sparse`` index idf when the
collection has one over the student's vocabulary, else computed over the corpus as the
index build does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import InputError
from twofold.core.types import Query, Ranking
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.indexing.sparse.build import doc_text
from twofold.train.distill import open_teachers, teacher_rankings, teacher_scores
from twofold.train.publish import check_output
from twofold.train.sparse import (
    SparseExample,
    SparseTrainConfig,
    SparseTrainResult,
    corpus_idf,
    train_sparse,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparseDistillConfig:
    """``teachers``: retriever names of the ensemble; ``depth``: hits per teacher;
    ``group_size``: documents per query in the listwise KL (``G``); ``scale``: multiplier
    of the averaged min-max score (DESIGN.md: 30); ``idf_max_length``: tokens per document
    when the idf is computed over the corpus (the build's ``max_length``)."""

    teachers: tuple[str, ...] = ("bm25", "dense", "splade")
    depth: int = 50
    group_size: int = 8
    max_queries: int | None = None
    scale: float = 30.0
    idf_max_length: int = 256

    def __post_init__(self) -> None:
        if not self.teachers:
            raise InputError("at least one teacher retriever")
        if self.depth < 1 or self.group_size < 2 or self.scale <= 0:
            raise InputError("depth >= 1, group_size >= 2 and scale > 0")
        if self.group_size > self.depth * len(self.teachers):
            raise InputError(
                f"group_size {self.group_size} exceeds the candidates the teachers can return "
                f"({self.depth} x {len(self.teachers)}); raise --depth"
            )
        if self.max_queries is not None and self.max_queries < 1:
            raise InputError("max_queries >= 1")
        if self.idf_max_length < 1:
            raise InputError("idf_max_length >= 1")


def query_group(
    judged: Mapping[str, int], rankings: Mapping[str, Ranking], config: SparseDistillConfig
) -> list[tuple[str, float]] | None:
    """One query's group: ``group_size`` (doc_id, teacher logit) pairs, the retrieved
    positives first; ``None`` when the teachers returned fewer candidates."""
    t = teacher_scores(rankings, config.scale)  # best first
    if len(t) < config.group_size:
        return None
    positives = [d for d in t if judged.get(d, 0) >= 1][: config.group_size]
    taken = set(positives)
    rest = [d for d in t if d not in taken]
    chosen = positives + rest[: config.group_size - len(positives)]
    return [(d, t[d]) for d in chosen]


def build_sparse_examples(
    collection: Collection, dataset: BeirDataset, split: str, config: SparseDistillConfig
) -> list[SparseExample]:
    """Listwise examples of the first ``max_queries`` judged queries of ``split``."""
    teachers = open_teachers(collection, config.teachers)
    qrels = dataset.qrels(split)
    queries: list[Query] = dataset.queries(split, qrels)[: config.max_queries]
    examples: list[SparseExample] = []
    skipped = with_positive = 0
    for query in queries:
        rankings = teacher_rankings(teachers, query, config.depth)
        judged = qrels[query.query_id]
        group = query_group(judged, rankings, config)
        if group is None:
            skipped += 1
            continue
        with_positive += any(judged.get(d, 0) >= 1 for d, _ in group)
        texts = tuple(doc_text(collection.docs.get(d)) for d, _ in group)
        examples.append(SparseExample(query.text, texts, tuple(s for _, s in group)))
    log.info(
        "%d examples from %d queries (%d with a judged positive in the group; %d skipped: "
        "fewer than %d candidates)",
        len(examples),
        len(queries),
        with_positive,
        skipped,
        config.group_size,
    )
    return examples


def collection_idf(
    collection: Collection, tokenizer: Any, config: SparseDistillConfig
) -> tuple[np.ndarray, str]:
    """(idf by the student tokenizer's ids, where it came from): the collection's
    inference-free ``sparse`` index idf when its vocabulary is the tokenizer's, else
    computed over the collection's documents."""
    from twofold.models.sparse import vocab_list

    if collection.has("sparse"):
        index = collection.index("sparse")
        if index.kind == "inference-free" and (index.path / "idf.npy").is_file():
            vocab = vocab_list(tokenizer)
            if index.vocab[: len(vocab)] == vocab:
                return np.asarray(index.idf(), dtype=np.float32), "collection sparse idf.npy"
            log.info("the collection's sparse vocabulary differs from the student's")
    texts = (doc_text(d) for d in collection.docs)
    idf = corpus_idf(texts, tokenizer, config.idf_max_length)
    return idf, f"computed over the corpus ({len(collection.docs)} docs)"


def distill_sparse(
    collection: Collection,
    dataset: BeirDataset,
    split: str,
    out: Path,
    distill: SparseDistillConfig,
    train: SparseTrainConfig,
    progress: bool = False,
) -> SparseTrainResult:
    """Build the examples and the idf, train the student, save it to ``out``."""
    from twofold.models.registry import resolve
    from twofold.models.sparse import load_tokenizer

    base_dir = resolve(train.base)
    check_output(out, base_dir)  # before the teachers run: a bad --out costs nothing
    tokenizer = load_tokenizer(base_dir if isinstance(base_dir, Path) else Path(base_dir))
    examples = build_sparse_examples(collection, dataset, split, distill)
    if not examples:
        raise InputError(
            f"no training examples from split {split!r}: no query had {distill.group_size} "
            "candidates; lower --group-size or raise --depth"
        )
    idf, source = collection_idf(collection, tokenizer, distill)
    extra: dict[str, Any] = {
        "collection": str(collection.path),
        "dataset": str(dataset.root),
        "split": split,
        "teachers": list(distill.teachers),
        "depth": distill.depth,
        "max_queries": distill.max_queries,
        "teacher_scale": distill.scale,
        "idf_source": source,
    }
    return train_sparse(examples, idf, out, train, extra_args=extra, progress=progress)
