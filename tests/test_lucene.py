"""The lean Lucene search path: query-syntax escaping against Lucene's own parser, the
clause limit, and hit order (score, then doc id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twofold.core.errors import InputError
from twofold.indexing.collection import Collection
from twofold.indexing.lucene import MAX_CLAUSES, _java, escape_term
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
    from twofold.indexing.lucene import ImpactSearcher

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
