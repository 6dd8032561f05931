"""Inference-free sparse encoder training: KL and the FLOPS warm-up by hand, the groups
and idf from a tiny collection, the loop on a tiny random MLM (loss goes down, FLOPS
sparsifies, the output directory builds a sparse collection that searches), the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from twofold.app.cli import main
from twofold.core.errors import InputError
from twofold.core.types import Hit, Query, Ranking
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, SparseOptions
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.indexing.sparse.build import doc_text
from twofold.models.sparse import idf_from_df, load_idf_json, load_tokenizer
from twofold.search.retrievers import RETRIEVERS
from twofold.train.distill import teacher_scores
from twofold.train.distill_sparse import (
    SparseDistillConfig,
    build_sparse_examples,
    collection_idf,
    query_group,
)
from twofold.train.losses import flops_lambda, kl_distill
from twofold.train.publish import ARGS_FILE
from twofold.train.sparse import (
    SparseExample,
    SparseTrainConfig,
    corpus_idf,
    train_sparse,
)

from .conftest import TINY_DOCS
from .test_sparse_unit import build_tiny_collection


# ------------------------------------------------------------------------------ losses
def test_kl_distill_by_hand() -> None:
    student = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]])
    teacher = torch.tensor([[5.0, 5.0], [11.0, 12.0]])
    # row 1: p_t = (1/2, 1/2), p_s = (1/4, 3/4): 1/2 ln(2) + 1/2 ln(2/3)
    # row 2: p_t = p_s (same differences): 0; the mean over the batch halves row 1
    row1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(kl_distill(student, teacher)) == pytest.approx(row1 / 2)
    # a constant added to a row of either changes nothing; identical rows give 0
    assert float(kl_distill(student + 4.0, teacher - 1.0)) == pytest.approx(row1 / 2)
    assert float(kl_distill(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError):
        kl_distill(student, teacher[:, :1])
    with pytest.raises(ValueError):
        kl_distill(student[0], teacher[0])


def test_flops_lambda_quadratic_warmup() -> None:
    assert flops_lambda(0, 0.4, 10) == 0.0
    assert flops_lambda(5, 0.4, 10) == pytest.approx(0.4 * 0.25)  # (5/10)^2
    assert flops_lambda(10, 0.4, 10) == pytest.approx(0.4)
    assert flops_lambda(25, 0.4, 10) == pytest.approx(0.4)  # flat after warm-up
    assert flops_lambda(0, 0.4, 0) == pytest.approx(0.4)  # no warm-up
    with pytest.raises(ValueError):
        flops_lambda(-1, 0.4, 10)


# ------------------------------------------------------------------------ collection
QUERIES = [
    {"_id": "q1", "text": "boundary layer heat"},
    {"_id": "q2", "text": "wings lift pressure"},
    {"_id": "q3", "text": "supersonic shells"},
    {"_id": "q9", "text": "not in the split"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td5\t0\nq2\td4\t2\nq3\td2\t1\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Collection, BeirDataset, Path]:
    """TINY_DOCS with bm25, sparse and splade (a tiny random MLM shipping idf.json), a
    BEIR train split over them, and the MLM's directory (the student's base)."""
    root = tmp_path_factory.mktemp("train-sparse")
    collection = build_tiny_collection(root, ("bm25", "sparse", "splade"), with_idf=True)
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (beir / "qrels" / "train.tsv").write_text(QRELS)
    return collection, BeirDataset(beir), root / "mlm"


def test_query_group_by_hand() -> None:
    a = Ranking("q", (Hit("d1", 10.0), Hit("d2", 6.0), Hit("d3", 2.0)))
    b = Ranking("q", (Hit("d2", 0.9), Hit("d4", 0.5)))
    config = SparseDistillConfig(teachers=("a", "b"), depth=3, group_size=3, scale=30.0)
    # teacher logits: d2 30 * (0.5 + 1) / 2 = 22.5, d1 15, d3 0, d4 0; d4 judged relevant
    group = query_group({"d4": 1, "d1": 0}, {"a": a, "b": b}, config)
    assert group == [("d4", 0.0), ("d2", 22.5), ("d1", 15.0)]
    # no positive retrieved: the best three candidates
    assert query_group({"d9": 1}, {"a": a, "b": b}, config) == [
        ("d2", 22.5),
        ("d1", 15.0),
        ("d3", 0.0),
    ]
    # fewer candidates than the group: no group
    assert query_group({}, {"b": b}, config) is None
    with pytest.raises(InputError):
        SparseDistillConfig(group_size=1)
    with pytest.raises(InputError, match="depth"):
        SparseDistillConfig(teachers=("bm25",), depth=2, group_size=3)


def test_examples_and_idf_from_a_collection(tiny: tuple[Collection, BeirDataset, Path]) -> None:
    collection, dataset, mlm = tiny
    config = SparseDistillConfig(teachers=("bm25", "splade"), depth=5, group_size=3)
    examples = build_sparse_examples(collection, dataset, "train", config)
    assert examples and {e.query for e in examples} <= {q["text"] for q in QUERIES[:3]}
    by_text = {doc_text(d): d.doc_id for d in collection.docs}
    teachers = {t: RETRIEVERS.get(t)(collection) for t in config.teachers}
    qids = {q["text"]: q["_id"] for q in QUERIES}
    qrels = dataset.qrels("train")
    for e in examples:
        qid = qids[e.query]
        rankings = {n: r.retrieve(Query(qid, e.query), 5) for n, r in teachers.items()}
        expected = teacher_scores(rankings, 30.0)
        ids = [by_text[d] for d in e.docs]
        assert len(ids) == 3 == len(set(ids))
        assert list(e.teacher) == pytest.approx([expected[d] for d in ids])
        found = [d for d, g in qrels[qid].items() if g >= 1 and d in expected]
        assert set(found) <= set(ids)  # a retrieved positive is always in the group
    with pytest.raises(InputError, match="dense"):
        build_sparse_examples(collection, dataset, "train", SparseDistillConfig())

    # the idf: the collection's sparse idf.npy (there, the tiny model's idf.json)
    tokenizer = load_tokenizer(mlm)
    idf, source = collection_idf(collection, tokenizer, config)
    assert "idf.npy" in source
    assert np.allclose(idf[: len(tokenizer)], load_idf_json(mlm / "idf.json", tokenizer))


def test_corpus_idf_by_hand(tiny: tuple[Collection, BeirDataset, Path]) -> None:
    tokenizer = load_tokenizer(tiny[2])
    vocab = tokenizer.get_vocab()
    idf = corpus_idf(["heat heat transfer", "heat flow", "wings"], tokenizer, 32, chunk=2)
    df = np.zeros(len(tokenizer), dtype=np.int64)
    df[vocab["heat"]], df[vocab["transfer"]], df[vocab["flow"]], df[vocab["wings"]] = 2, 1, 1, 1
    assert np.allclose(idf, idf_from_df(df, 3))  # [CLS]/[SEP] excluded: df 0


# ------------------------------------------------------------------------------ loop
def _fixed_examples(collection: Collection) -> list[SparseExample]:
    texts = [doc_text(d) for d in collection.docs]  # d1..d5
    return [
        SparseExample("heat transfer boundary", tuple(texts[:4]), (30.0, 0.0, 0.0, 10.0)),
        SparseExample("wings lift", tuple(texts[1:5]), (0.0, 0.0, 30.0, 5.0)),
    ]


def _idf(mlm: Path) -> np.ndarray:
    idf: np.ndarray = load_idf_json(mlm / "idf.json", load_tokenizer(mlm))
    return idf


def test_loop_learns_and_the_model_builds_a_collection(
    tiny: tuple[Collection, BeirDataset, Path], tmp_path: Path
) -> None:
    collection, _, mlm = tiny
    out = tmp_path / "student"
    config = SparseTrainConfig(
        base=str(mlm), epochs=30, batch_size=2, lr=3e-3, max_length=32, lambda_max=0.0
    )
    idf = _idf(mlm)
    result = train_sparse(_fixed_examples(collection), idf, out, config, extra_args={"n": 1})
    assert result.steps == 30
    assert sum(result.kl[-5:]) / 5 < 0.5 * sum(result.kl[:5]) / 5, result.kl
    record = json.loads((out / ARGS_FILE).read_text())
    assert record["steps"] == 30 and record["n"] == 1 and record["group_size"] == 4
    assert len(record["per_step"]["kl"]) == 30 and record["seconds"] >= 0
    # idf.json round-trips (special tokens left out: 0, as the query side zeroes them)
    tokenizer = load_tokenizer(out)
    shipped = load_idf_json(out / "idf.json", tokenizer)
    special = tokenizer.all_special_ids
    expected = idf.copy()
    expected[special] = 0.0
    assert np.allclose(shipped, expected, atol=1e-6)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    options = BuildOptions(
        retrievers=("sparse",), sparse=SparseOptions(model=str(out)), max_length=32, progress=False
    )
    build_collection(corpus, tmp_path / "c", options)
    built = Collection(tmp_path / "c")
    entry = built.manifest.sub_indexes["sparse"]
    assert entry["kind"] == "inference-free" and entry["idf"]["source"] == "idf.json"
    hits = RETRIEVERS.get("sparse")(built).retrieve(Query("q", "heat transfer boundary"), 3)
    assert hits.hits and hits.hits[0].doc_id == "d1"  # the trained preference


def test_flops_reduces_active_terms(
    tiny: tuple[Collection, BeirDataset, Path], tmp_path: Path
) -> None:
    collection, _, mlm = tiny
    examples, idf = _fixed_examples(collection), _idf(mlm)
    active = {}
    for lam in (0.0, 50.0):
        config = SparseTrainConfig(
            base=str(mlm),
            epochs=15,
            batch_size=2,
            lr=1e-2,
            max_length=32,
            lambda_max=lam,
            warmup_steps=3,
        )
        result = train_sparse(examples, idf, tmp_path / f"m{lam}", config)
        assert result.lambdas[:4] == pytest.approx([0.0, lam / 9, 4 * lam / 9, lam])
        active[lam] = result.final_active
    assert active[50.0] < 0.5 * active[0.0], active


def test_loop_refuses_bad_input(tiny: tuple[Collection, BeirDataset, Path], tmp_path: Path) -> None:
    collection, _, mlm = tiny
    config = SparseTrainConfig(base=str(mlm), device="cpu")
    with pytest.raises(InputError):
        train_sparse([], _idf(mlm), tmp_path / "x", config)
    mixed = [SparseExample("a", ("x", "y"), (1.0, 0.0)), SparseExample("b", ("x",), (1.0,))]
    with pytest.raises(InputError, match="group size"):
        train_sparse(mixed, _idf(mlm), tmp_path / "x", config)
    with pytest.raises(InputError, match="base model"):
        train_sparse(_fixed_examples(collection), _idf(mlm), mlm, config)
    with pytest.raises(InputError):
        SparseTrainConfig(lambda_max=-1.0)
    with pytest.raises(InputError):
        SparseExample("q", ("a", "b"), (1.0,))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- CLI
def test_cli_train_sparse(
    tiny: tuple[Collection, BeirDataset, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    collection, dataset, mlm = tiny
    out = tmp_path / "model"
    argv = ["train", "sparse", str(collection.path), "--dataset", str(dataset.root)]
    argv += ["--out", str(out), "--base", str(mlm), "--teachers", "bm25,splade"]
    argv += ["--depth", "5", "--max-length", "32", "--device", "cpu", "--quiet"]
    # bad flags: an error message, exit 2, nothing written
    assert main([*argv, "--group-size", "1"]) == 2
    assert "group_size" in capsys.readouterr().err
    assert main([*argv, "--flops-lambda", "-1"]) == 2
    assert main([*argv, "--teachers", "dense", "--group-size", "3"]) == 2
    assert "no dense index" in capsys.readouterr().err
    assert not out.exists()

    assert main([*argv, "--group-size", "3", "--epochs", "2", "--batch-size", "2"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] >= 2 and summary["out"] == str(out)
    record = json.loads((out / ARGS_FILE).read_text())
    assert record["teachers"] == ["bm25", "splade"] and record["teacher_scale"] == 30.0
    assert record["group_size"] == 3 and "idf.npy" in record["idf_source"]
    assert (out / "idf.json").is_file() and (out / "config.json").is_file()
