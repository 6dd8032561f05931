"""Top-k search over an Anserini-built Lucene index, with few crossings into the JVM.

Anserini's ``SimpleSearcher`` / ``SimpleImpactSearcher`` hand back one ``Result``
object per hit, and each object costs Python a JNI round trip to wrap; their
``search(query, k, sort, doDocScores=True)`` also re-scores every hit a second time
(``TopFieldCollector.populateScores``). Here a query takes a constant handful of
calls: build the query, collect the top ``k`` with a ``TopScoreDocCollector`` whose
dynamic pruning starts as soon as ``k`` hits are in (``totalHitsThreshold = k``: we
never report total hit counts), and read the hits back as two Java arrays (doc ids,
scores) through Anserini's ``ScoredDocs``. BM25 and the impact (learned sparse)
indexes both search through this class, so their latencies compare like with like
(``bench/bench_sparse.py``).

Ties: Lucene orders equal scores by its internal doc number; ``top_k`` orders hits by
score, then doc id (string), as Anserini's searchers do, and collects past the ``k``-th
hit while the scores there are tied, so which documents make the cut does not depend on
the index layout either. (Anserini then rounds scores to 4 decimals; we do not.)

Thread safety: ``IndexSearcher`` is thread-safe; Lucene's classic ``QueryParser`` is
not, so each thread gets its own (``threading.local``).
"""

from __future__ import annotations

import re
import threading
from functools import cache
from pathlib import Path
from typing import Any

from twofold.core.errors import InputError
from twofold.indexing.lucene.jvm import autoclass

FIELD = "contents"  # Anserini's default field, both for text and for impacts
# Lucene's limit on the clauses of one BooleanQuery (IndexSearcher.getMaxClauseCount)
MAX_CLAUSES = 1024
# top_k widens its collection while the k-th score is tied, up to this many times k + 1
TIE_WIDEN_LIMIT = 8
_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/&|])')
_OPERATORS = frozenset({"AND", "OR", "NOT", "TO"})


@cache
def _java() -> dict[str, Any]:
    """The Java classes this module calls, resolved once (``autoclass`` is a lookup)."""
    names = {
        "File": "java.io.File",
        "FSDirectory": "org.apache.lucene.store.FSDirectory",
        "DirectoryReader": "org.apache.lucene.index.DirectoryReader",
        "IndexSearcher": "org.apache.lucene.search.IndexSearcher",
        "TopScoreDocCollector": "org.apache.lucene.search.TopScoreDocCollector",
        "ScoredDocs": "io.anserini.search.ScoredDocs",
        "BM25Similarity": "org.apache.lucene.search.similarities.BM25Similarity",
        "ImpactSimilarity": "io.anserini.search.similarity.ImpactSimilarity",
        "DefaultEnglishAnalyzer": "io.anserini.analysis.DefaultEnglishAnalyzer",
        "BagOfWordsQueryGenerator": "io.anserini.search.query.BagOfWordsQueryGenerator",
        "QueryParser": "org.apache.lucene.queryparser.classic.QueryParser",
        "WhitespaceAnalyzer": "org.apache.lucene.analysis.core.WhitespaceAnalyzer",
    }
    return {key: autoclass(name) for key, name in names.items()}


def escape_term(term: str) -> str:
    """``term`` as one literal term in Lucene's classic query syntax: its operator
    characters backslash-escaped, and AND/OR/NOT/TO (operators when upper case) too.

    Returns ``""`` for a term no query can reach: the empty string, or one with
    whitespace (the impact index was built ``-pretokenized``, split on whitespace)."""
    if not term or any(c.isspace() for c in term):
        return ""
    escaped = _SPECIAL.sub(r"\\\1", term)
    return "\\" + escaped if term in _OPERATORS else escaped


class LuceneSearcher:
    """One opened Lucene index and its similarity; ``top_k`` runs a built query."""

    def __init__(self, index_dir: Path, similarity: Any) -> None:
        java = _java()  # a damaged index raises here; Collection.index names the sub-index
        directory = java["FSDirectory"].open(java["File"](str(index_dir)).toPath())
        self._reader = java["DirectoryReader"].open(directory)
        from jnius import cast  # pyjnius picks overloads by runtime class: pin the types

        reader = cast("org.apache.lucene.index.IndexReader", self._reader)
        self._searcher = java["IndexSearcher"](reader)
        self._searcher.setSimilarity(similarity)
        self._collector = java["TopScoreDocCollector"].create
        self._scored = java["ScoredDocs"].fromTopDocs
        self._cast: Any = cast

    def top_k(self, query: Any, k: int) -> list[tuple[str, float]]:
        """The ``k`` best (doc_id, Lucene score) pairs of ``query``: by score, then doc id,
        also across the cut (documents tied with the ``k``-th compete by doc id)."""
        if k <= 0:
            return []
        n = k + 1  # one more than asked: shows whether the k-th score is tied below it
        while True:
            pairs = self._collect(query, n)
            if len(pairs) < n or pairs[-1][1] < pairs[k - 1][1]:
                break  # every document scoring >= the k-th's is in hand
            if n >= TIE_WIDEN_LIMIT * (k + 1):
                break  # a tie this wide: Lucene's doc order decides the rest of it
            n *= 2
        pairs.sort(key=lambda h: (-h[1], h[0]))
        return [(str(d), float(s)) for d, s in pairs[:k]]

    def _collect(self, query: Any, n: int) -> list[tuple[str, float]]:
        """Lucene's top ``n``, by score (ties by Lucene's internal doc number).

        pyjnius keeps one method object per Java *class* and binds the instance to it at
        attribute lookup, so a thread switch between ``obj.method`` and its call can run
        the call on another thread's object (another index). Hence every argument of a
        Java instance call is computed into a local first: no Python runs in between."""
        collector = self._collector(n, n)
        as_collector = self._cast("org.apache.lucene.search.Collector", collector)
        self._searcher.search(query, as_collector)
        top_docs = collector.topDocs()
        hits = self._scored(top_docs, self._searcher)
        return list(zip(hits.docids, hits.scores, strict=True))

    @property
    def doc_count(self) -> int:
        """Live documents in the index (``IndexReader.numDocs``)."""
        return int(self._reader.numDocs())

    def close(self) -> None:
        """Close the reader: Lucene unmaps its files and closes their descriptors."""
        self._reader.close()


class BM25Searcher:
    """Text queries, analyzed like the index (Anserini's default English analyzer:
    Porter stemming, Lucene's stopwords), scored with BM25 ``k1``, ``b``."""

    def __init__(self, index_dir: Path, k1: float, b: float) -> None:
        java = _java()
        self._lucene = LuceneSearcher(index_dir, java["BM25Similarity"](float(k1), float(b)))
        self._analyzer = java["DefaultEnglishAnalyzer"].newDefaultInstance()
        self._generator = java["BagOfWordsQueryGenerator"]()

    def search(self, text: str, k: int) -> list[tuple[str, float]]:
        query = self._generator.buildQuery(FIELD, self._analyzer, text)
        return self._lucene.top_k(query, k)

    @property
    def doc_count(self) -> int:
        return self._lucene.doc_count

    def close(self) -> None:
        self._lucene.close()


class ImpactSearcher:
    """Weighted term queries over an impact index (term frequency = integer impact):
    Lucene scores ``sum_t weight_t * impact_d[t]`` (Anserini's ``ImpactSimilarity``).

    The query reaches Java as one string, ``term^weight term^weight ...``, parsed by
    Lucene's classic ``QueryParser`` into the same ``BooleanQuery`` of boosted
    ``TermQuery`` clauses Anserini builds from a ``Map``: one call instead of one per
    term."""

    def __init__(self, index_dir: Path) -> None:
        java = _java()
        self._lucene = LuceneSearcher(index_dir, java["ImpactSimilarity"]())
        self._local = threading.local()

    def _parser(self) -> Any:
        parser = getattr(self._local, "parser", None)
        if parser is None:
            java = _java()
            parser = self._local.parser = java["QueryParser"](FIELD, java["WhitespaceAnalyzer"]())
        return parser

    def search(self, terms: list[str], weights: list[int], k: int) -> list[tuple[str, float]]:
        """``terms`` already escaped (``escape_term``, none empty), ``weights`` positive
        integers."""
        if not terms:
            return []
        if len(terms) > MAX_CLAUSES:
            raise InputError(
                f"the query has {len(terms)} distinct terms; Lucene takes at most "
                f"{MAX_CLAUSES} (shorten the query or use the native engine)"
            )
        text = " ".join(f"{t}^{w}" for t, w in zip(terms, weights, strict=True))
        return self._lucene.top_k(self._parser().parse(text), k)

    def close(self) -> None:
        self._lucene.close()
