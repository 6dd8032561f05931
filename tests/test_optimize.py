"""``twofold optimize`` end to end on a tiny bm25 + dense collection with a labelled
training split: every step runs, each is kept only with a held-out gain, what is kept is
in the collection (and what is not, is not), and the report has one row per step."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from tests.test_dense_model import WORDS, make_tiny_model
from tests.test_reranker import save_tiny_cross_encoder
from twofold.app.cli import main
from twofold.core.errors import InputError
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, DenseOptions
from twofold.indexing.collection import Collection
from twofold.search.pipeline import build_pipeline
from twofold.train.optimize import OptimizeJob, optimize, paired_p_value


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 10))).capitalize() + "."


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(5)
    docs = [
        {"_id": f"d{i}", "title": "", "text": " ".join(sentence(rng) for _ in range(3))}
        for i in range(40)
    ]
    data = tmp_path / "data"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [
        {"_id": f"q{i}", "text": " ".join(d["text"].split()[2:6])} for i, d in enumerate(docs)
    ]
    (data / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = "".join(f"q{i}\td{i}\t1\n" for i in range(40))
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    model = make_tiny_model(tmp_path / "dense", hidden=16)
    options = BuildOptions(
        retrievers=("bm25", "dense"),
        dense=DenseOptions(model=str(model)),
        batch_size=8,
        progress=False,
    )
    build_collection(data / "corpus.jsonl", tmp_path / "c", options)
    return tmp_path / "c", data


def test_optimize_keeps_only_what_helps_held_out(
    setup: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    collection, data = setup
    base = save_tiny_cross_encoder(tmp_path / "student")
    job = OptimizeJob(collection, "split", data, reranker_base=str(base), seed=1)
    dense_before = Collection(collection).manifest.sub_indexes["dense"]
    with caplog.at_level(logging.INFO, logger="twofold.indexing.dense.shards"):
        report = optimize(job)
    # the rebuild wrote the trainer's corpus vectors instead of encoding the corpus again
    assert "reusing the 40 corpus vectors the trainer made" in caplog.text
    assert [s.step for s in report.steps] == ["dense", "fusion", "adapter", "reranker"]
    assert report.heldout == 10 and report.tuning > 0
    table = report.table()
    assert all(step in table for step in ("dense", "fusion", "adapter", "reranker"))
    for step in report.steps:  # kept: a gain beyond chance on the held-out queries
        assert step.p_value is not None and f"p={step.p_value:.3f}" in step.detail
        assert step.kept == (step.after > step.before and step.p_value < job.significance)
    kept = {s.step: s.kept for s in report.steps}
    reopened = Collection(collection)
    dense_after = reopened.manifest.sub_indexes["dense"]
    changed = dense_after["encoder"]["sha256"] != dense_before["encoder"]["sha256"]
    assert changed == kept["dense"]  # re-encoded with the fine-tuned model only if kept
    assert "dense" in reopened.manifest.build.get("rebuilt", {}) or not kept["dense"]
    assert ("hybrid" in reopened.manifest.pipelines) == kept["fusion"]
    assert (collection / "adapter").is_dir() == kept["adapter"]
    assert (collection / "reranker").is_dir() == kept["reranker"]
    assert reopened.manifest.pipelines["optimize"]["heldout"] == 10
    if kept["reranker"]:  # hybrid+rerank needs no flag once the collection has a reranker
        assert build_pipeline(reopened, "hybrid+rerank").reranker is not None
    # no staging or backup folders are left behind, in the collection or beside it
    assert not [p.name for p in collection.iterdir() if p.name.startswith(".")]
    beside = sorted(p.name for p in collection.parent.iterdir() if p.name.startswith(".c"))
    assert len(beside) == 1 and beside[0].startswith(".c.v")  # the published version only


def test_optimize_refuses_unlabelled_files_and_unknown_steps(setup: tuple[Path, Path]) -> None:
    collection, _ = setup
    with pytest.raises(InputError, match="nothing to hold out"):
        OptimizeJob(collection, "queries.txt")
    with pytest.raises(InputError, match="unknown step"):
        OptimizeJob(collection, "pseudo", steps=("fusion", "magic"))


def test_optimize_cli_pseudo_fusion_only(
    setup: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    collection, _ = setup
    code = main(["optimize", str(collection), "--queries", "pseudo", "--steps", "fusion"])
    assert code == 0
    out = capsys.readouterr().out
    assert "pseudo" in out and "fusion" in out


def test_paired_p_value_by_hand() -> None:
    # two queries, both +1: of the 4 sign flips only (+, +) reaches the observed sum
    assert paired_p_value([0.0, 0.0], [1.0, 1.0]) == 0.25
    # +1 and -1: sums 0, 2, -2, 0 -> 3 of 4 reach the observed 0
    assert paired_p_value([0.0, 1.0], [1.0, 0.0]) == 0.75
    assert paired_p_value([0.5, 0.5], [0.5, 0.5]) == 1.0  # nothing changed
    # 40 queries all up by 0.1: only the all-plus flip reaches it -> (0 + 1) / 10,001 level
    assert paired_p_value([0.0] * 40, [0.1] * 40) < 0.001
    # 40 queries, one up: exact over the one changed query -> 1/2, never significant
    assert paired_p_value([0.0] * 40, [0.0] * 39 + [0.1]) == 0.5
