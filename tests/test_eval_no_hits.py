"""``twofold eval --no-hits zero|skip``: how a judged query with no hits is averaged.

A tiny real BM25 collection (Lucene) and three judged queries, one of them made of
words absent from the corpus, so it gets no hits. ``zero`` (the default) scores it 0
and averages over all three; ``skip`` averages over the two that were answered, which
is what pytrec_eval (BEIR's scorer) gives on the run file, whose means BEIR reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_DOCS
from twofold.app.cli import main
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions

QUERIES = {
    "q1": ("boundary layer heat transfer", {"d1": 2, "d5": 1}),
    "q2": ("zyxwvut qqqxxj", {"d2": 1}),  # no word of it is in the corpus
    "q3": ("swept wings drag", {"d4": 1, "d3": 1}),
}


@pytest.fixture
def tiny_beir(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    rows = [f"{q}\t{d}\t{g}" for q, (_, judged) in QUERIES.items() for d, g in judged.items()]
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows))
    col = tmp_path / "col"
    build_collection(data, col, BuildOptions(retrievers=("bm25",), progress=False))
    return data, col


def _eval(
    col: Path, data: Path, out: Path, capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[dict[str, object], str]:
    code = main(["eval", str(col), "--dataset", str(data), "--out", str(out), "--quiet", *flags])
    assert code == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def test_no_hit_queries_are_scored_zero_or_skipped_as_beir_does(
    tiny_beir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pytrec_eval

    data, col = tiny_beir
    zero, zero_table = _eval(col, data, tmp_path / "zero.json", capsys, "--runs", str(tmp_path))
    skip, skip_table = _eval(col, data, tmp_path / "skip.json", capsys, "--no-hits", "skip")

    # pytrec_eval over the run file as BEIR would read it: q2 is absent from the run
    run: dict[str, dict[str, float]] = {}
    for line in (tmp_path / "bm25.trec").read_text().splitlines():
        q, _, d, _, score, _ = line.split()
        run.setdefault(q, {})[d] = float(score)
    assert sorted(run) == ["q1", "q3"]
    qrels = {q: judged for q, (_, judged) in QUERIES.items()}
    beir = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    per_query = [v["ndcg_cut_10"] for v in beir.values()]
    assert len(per_query) == 2 and min(per_query) > 0

    z = zero["pipelines"]["bm25"]  # type: ignore[index]
    s = skip["pipelines"]["bm25"]  # type: ignore[index]
    assert s["ndcg@10"] == pytest.approx(sum(per_query) / 2, abs=1e-6)
    assert z["ndcg@10"] == pytest.approx(sum(per_query) / 3, abs=1e-6)
    assert (z["queries"], s["queries"]) == (3, 2)
    assert z["no_hits"] == {"convention": "zero", "queries": 1}
    assert s["no_hits"] == {"convention": "skip", "queries": 1}
    assert zero["no_hits"]["convention"] == "zero"  # type: ignore[index]
    assert "q2" in zero["per_query"]["bm25"] and "q2" not in skip["per_query"]["bm25"]  # type: ignore[index]

    assert "(--no-hits zero)" in zero_table and "scored 0, means over every judged" in zero_table
    assert "1 judged queries had no hits: scored 0" in zero_table
    assert "(--no-hits skip)" in skip_table and "BEIR's convention" in skip_table
    assert "1 judged queries had no hits: left out of the means" in skip_table


def test_the_no_hits_flag_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-hits {zero,skip}" in text and "BEIR's convention" in text
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "--no-hits skip" in readme
