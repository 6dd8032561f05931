"""The lean Lucene search path: query-syntax escaping against Lucene's own parser, the
clause limit, hit order (score, then doc id, also across the cut), and threads that
search different indexes at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twofold.core.errors import InputError
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.collection import Collection
from twofold.indexing.lucene.searcher import MAX_CLAUSES, _java, escape_term
from twofold.models.sparse import load_tokenizer
from twofold.search.sparse import SparseSearcher

AWKWARD = ["AND", "OR", "NOT", "TO", "and", "a-b", "(x)", "[CLS]", "{y}", "a:b", 'q"',
           "\\", "/", "*", "?", "~", "^", "!", "&&", "||", "+", "-", "##s", "é", "1.5"]  # fmt: skip


def _parsed_terms(tokens: list[str]) -> list[str]:
    """Parse ``tok^1 tok^1 ...`` with the parser ImpactSearcher uses; the clause terms."""
    java = _java()
    parser = java["QueryParser"]("contents", java["WhitespaceAnalyzer"]())
    from jnius import cast

    parsed = parser.parse(" ".join(f"{escape_term(t)}^1" for t in tokens))
    query: Any = cast("org.apache.lucene.search.BooleanQuery", parsed)
    out: list[str] = []
    for clause in query.clauses().toArray():
        boosted: Any = cast("org.apache.lucene.search.BoostQuery", clause.getQuery())
        term_query: Any = cast("org.apache.lucene.search.TermQuery", boosted.getQuery())
        out.append(term_query.getTerm().text())
    return out


def test_every_splade_tiny_token_parses_to_itself() -> None:
    vocab = sorted(load_tokenizer("splade-tiny").get_vocab())
    for start in range(0, len(vocab), 1000):
        chunk = vocab[start : start + 1000]
        assert _parsed_terms(chunk) == chunk


def test_operator_words_and_syntax_characters_stay_literal() -> None:
    assert _parsed_terms(AWKWARD) == AWKWARD
    # no query reaches these: the pretokenized index splits terms on whitespace
    assert escape_term("") == escape_term("a b") == escape_term("a\tb") == ""


@pytest.fixture(scope="module")
def tiny_sparse(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    from .test_sparse_unit import build_tiny_collection

    return build_tiny_collection(tmp_path_factory.mktemp("lucene"), ("bm25", "sparse"), False)


def test_impact_hits_ordered_by_score_then_doc_id(tiny_sparse: Collection) -> None:
    engine = tiny_sparse.index("sparse").engine("lucene")
    vocab = tiny_sparse.index("sparse").vocab
    ids = np.arange(5, len(vocab))  # every non-special token, weight 1: many tied scores
    hits = engine.search(ids, np.full(len(ids), 0.01, dtype=np.float32), 100)
    assert hits and len({d for d, _ in hits}) == len(hits)
    assert hits == sorted(hits, key=lambda h: (-h[1], h[0]))


def test_impact_query_over_the_clause_limit_is_an_input_error(tiny_sparse: Collection) -> None:
    from twofold.indexing.lucene.searcher import ImpactSearcher

    searcher = ImpactSearcher(Path(tiny_sparse.path) / "sparse" / "lucene")
    terms = [f"t{i}" for i in range(MAX_CLAUSES + 1)]
    with pytest.raises(InputError, match="at most 1024"):
        searcher.search(terms, [1] * len(terms), 10)
    assert searcher.search(terms[:3], [1, 1, 1], 10) == []  # unknown terms: no hits
    searcher.close()


def test_bm25_hits_ordered_by_score_then_doc_id(tiny_sparse: Collection) -> None:
    hits = tiny_sparse.index("bm25").search("the flow of heat", 10)
    assert hits == sorted(hits, key=lambda h: (-h[1], h[0]))


def test_serving_engine_is_chosen_at_open(tiny_sparse: Collection) -> None:
    from twofold.app.settings import Settings
    from twofold.app.state import open_collection
    from twofold.core.types import Query

    coll = Collection(tiny_sparse.path)  # fresh: indexes not opened yet
    assert coll.index("sparse").default_engine == "native"  # the build's choice
    state = open_collection(coll, Settings(sparse_engine="lucene", warmup=False), None)
    retriever: Any = state.retrievers["sparse"]
    assert retriever.searcher.engine.name == "lucene"
    text = "heat transfer"
    served = state.pipelines["sparse"].search(Query("q", text), 5).doc_ids()
    exact = SparseSearcher(Collection(tiny_sparse.path).index("sparse"), "native")
    assert served[:1] == [d for d, _ in exact.search(text, 5)][:1]
    with pytest.raises(InputError, match="unknown sparse engine"):
        coll.index("sparse").use_engine("faiss")


def test_ties_at_the_cut_are_broken_by_doc_id(tmp_path: Path) -> None:
    # twelve identical documents, written in descending id order: Lucene's own doc
    # numbers put "d11" first, but the cut must keep the smallest ids
    corpus = tmp_path / "corpus.jsonl"
    ids = [f"d{i:02d}" for i in range(12)]
    lines = [json.dumps({"_id": d, "title": "", "text": "heat flow"}) for d in reversed(ids)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    build_collection(corpus, tmp_path / "c", BuildOptions(retrievers=("bm25",), progress=False))
    bm25 = Collection(tmp_path / "c").index("bm25")
    hits = bm25.search("heat", 3)
    assert [d for d, _ in hits] == ids[:3]
    assert len({s for _, s in hits}) == 1
    assert [d for d, _ in bm25.search("heat", 12)] == ids


def test_concurrent_searches_stay_on_their_own_index(tiny_sparse: Collection) -> None:
    """pyjnius binds a Java instance to a per-class method object at lookup time; BM25
    and impact searches share IndexSearcher, so threads must not cross indexes."""
    import sys
    import threading

    bm25 = tiny_sparse.index("bm25")
    engine = tiny_sparse.index("sparse").engine("lucene")
    texts = ["heat transfer", "thin shells", "supersonic flow", "swept wings", "skin friction"]
    vocab = tiny_sparse.index("sparse").vocab
    weights = np.array([0.5, 0.25], dtype=np.float32)
    queries = [(np.array([j, j + 1]), weights) for j in range(5, len(vocab) - 1)]
    want_b = [bm25.search(t, 3) for t in texts]
    want_i = [engine.search(ids, w, 3) for ids, w in queries]
    wrong: list[str] = []

    def run_bm25() -> None:
        for _ in range(40):
            wrong.extend(t for t, w in zip(texts, want_b, strict=True) if bm25.search(t, 3) != w)

    def run_impact() -> None:
        for _ in range(40):
            for (ids, w), expected in zip(queries, want_i, strict=True):
                if engine.search(ids, w, 3) != expected:
                    wrong.append(str(ids))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        threads = [threading.Thread(target=f) for f in (run_bm25, run_impact) * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
