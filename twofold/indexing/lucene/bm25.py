"""BM25 sub-index: a Lucene index built by Anserini, searched through the in-process JVM.

Title and text go into one ``contents`` field, analyzed with Lucene's default English
analyzer (Porter stemming, stopwords) and scored with BM25 ``k1=0.9, b=0.4``: the
setup of Pyserini's BEIR "flat" regressions. Anserini skips a document with no text
at all; the manifest entry counts those (``empty_docs``), so that the index's document
count can be checked against the doc store's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twofold.indexing.buildctx import BuildContext
from twofold.indexing.lucene.jvm import run_anserini
from twofold.indexing.lucene.searcher import BM25Searcher

FORMAT_VERSION = 1
K1, B = 0.9, 0.4


def build(ctx: BuildContext, out: Path) -> dict[str, Any]:
    """Write the JsonCollection input from the doc store and index it with Anserini."""
    staging = out / "_input"
    if out.exists():
        shutil.rmtree(out)  # Lucene builds are quick: restart rather than resume
    staging.mkdir(parents=True)
    empty = 0
    with (staging / "docs.jsonl").open("w", encoding="utf-8") as fh:
        for doc in ctx.progress(ctx.docs, desc="bm25: export"):
            empty += not (doc.title.strip() or doc.text.strip())
            fh.write(json.dumps({"id": doc.doc_id, "contents": f"{doc.title} {doc.text}"}) + "\n")
    run_anserini(
        "io.anserini.index.IndexCollection",
        [
            "-collection",
            "JsonCollection",
            "-input",
            str(staging),
            "-index",
            str(out / "lucene"),
            "-generator",
            "DefaultLuceneDocumentGenerator",
            "-threads",
            "2",
        ],
    )
    shutil.rmtree(staging)
    return {
        "format_version": FORMAT_VERSION,
        "engine": "lucene",
        "k1": K1,
        "b": B,
        "analyzer": "english",
        "fields": "title+text",
        "empty_docs": empty,
    }


@dataclass
class LuceneBM25:
    """An opened BM25 index. ``search`` returns (doc_id, score) pairs, best first."""

    path: Path
    k1: float = K1
    b: float = B
    empty_docs: int | None = None  # documents Anserini skipped (None: not recorded)

    def __post_init__(self) -> None:
        self._searcher = BM25Searcher(self.path / "lucene", self.k1, self.b)

    def search(self, text: str, k: int) -> list[tuple[str, float]]:
        if not text.strip():
            return []
        return self._searcher.search(text, int(k))

    @property
    def doc_count(self) -> int | None:
        """The doc-store documents this index accounts for: those Lucene holds plus the
        empty ones Anserini skipped (None for a build that did not record them)."""
        if self.empty_docs is None:
            return None
        return self._searcher.doc_count + self.empty_docs

    def close(self) -> None:
        self._searcher.close()


def open_index(path: Path, entry: dict[str, Any]) -> LuceneBM25:
    empty = entry.get("empty_docs")
    return LuceneBM25(
        path,
        float(entry.get("k1", K1)),
        float(entry.get("b", B)),
        None if empty is None else int(empty),
    )
