"""Metric code against hand-computed values on a 3-query example."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from twofold.core.types import Hit, Query, Ranking
from twofold.search.evaluate import clean_run, evaluate, score_run

QRELS = {
    "q1": {"a": 1, "b": 2},
    "q2": {"x": 1},
    "q3": {"m": 1, "n": 0},
}
RUN = {
    "q1": [("a", 3.0), ("c", 2.0), ("b", 1.0)],
    "q2": [("y", 1.0), ("z", 0.5)],
    "q3": [("n", 2.0), ("m", 1.0)],
}


def test_ndcg_recall_mrr_by_hand() -> None:
    per_query = score_run(QRELS, RUN)
    # q1: DCG = 1/log2(2) + 2/log2(4) = 2; ideal = 2/log2(2) + 1/log2(3)
    q1 = 2.0 / (2.0 + 1.0 / math.log2(3))
    q3 = (1.0 / math.log2(3)) / 1.0  # m at rank 2; n has grade 0
    assert per_query["q1"]["ndcg@10"] == pytest.approx(q1, abs=1e-6)
    assert per_query["q2"]["ndcg@10"] == 0.0
    assert per_query["q3"]["ndcg@10"] == pytest.approx(q3, abs=1e-6)
    assert [per_query[q]["recall@100"] for q in ("q1", "q2", "q3")] == [1.0, 0.0, 1.0]
    # grade 0 is not relevant for MRR: q3's first relevant hit is at rank 2
    assert [per_query[q]["mrr@10"] for q in ("q1", "q2", "q3")] == [1.0, 0.0, 0.5]


def test_list_order_wins_over_scores() -> None:
    # Equal scores: the ranking's order must decide, not pytrec_eval's tie-break by id.
    per_query = score_run({"q": {"b": 1}}, {"q": [("b", 1.0), ("a", 1.0)]})
    assert per_query["q"]["mrr@10"] == 1.0


def test_mrr_cut_at_10() -> None:
    hits = [(f"d{i}", 20.0 - i) for i in range(11)]
    per_query = score_run({"q": {"d10": 1}}, {"q": hits})
    assert per_query["q"]["mrr@10"] == 0.0 and per_query["q"]["recall@100"] == 1.0


def test_evaluate_drops_self_hits_and_duplicates_and_averages_all_queries() -> None:
    def search(query: Query) -> Ranking:
        hits = {
            "q1": [Hit("q1", 9.0), Hit("a", 3.0), Hit("a", 2.5), Hit("c", 2.0), Hit("b", 1.0)],
            "q2": [Hit("y", 1.0), Hit("z", 0.5)],
            "q3": [],
        }[query.query_id]
        return Ranking(query.query_id, tuple(hits))

    queries = [Query(q, "text") for q in QRELS]
    result = evaluate("t", search, queries, QRELS)
    assert result.dropped_self == 1 and result.dropped_duplicates == 1
    q1 = 2.0 / (2.0 + 1.0 / math.log2(3))
    assert result.metrics["ndcg@10"] == pytest.approx(q1 / 3, abs=1e-6)
    assert result.summary()["queries"] == 3


def test_clean_run_keeps_order() -> None:
    ranking = Ranking("q", (Hit("a", 1.0), Hit("q", 0.9), Hit("b", 0.8), Hit("a", 0.7)))
    assert clean_run("q", ranking) == ([("a", 1.0), ("b", 0.8)], 1, 1)


def test_trec_run_keeps_ranking_order_under_ties(tmp_path: Path) -> None:
    from twofold.search.evaluate import write_trec_run

    path = tmp_path / "run.trec"
    write_trec_run(path, "x", {"q": [("b", 0.5), ("a", 0.5), ("c", 0.7)]})
    rows = [line.split() for line in path.read_text().splitlines()]
    scores = [float(r[4]) for r in rows]
    assert [r[2] for r in rows] == ["b", "a", "c"] and [r[3] for r in rows] == ["1", "2", "3"]
    assert scores == [3.0, 2.0, 1.0]  # rank-consistent: n + 1 - rank
    # trec_eval's order (score desc, then doc id desc) is the ranking's order
    resorted = sorted(rows, key=lambda r: (-float(r[4]), r[2]), reverse=False)
    assert [r[2] for r in resorted] == ["b", "a", "c"]
