"""Reranker distillation: Margin-MSE and FLOPS by hand, the training loop on a tiny
random BERT, the example builder on a tiny BM25 collection, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from twofold.app.cli import main
from twofold.core.errors import InputError
from twofold.core.types import Hit, Query, Ranking
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.models.reranker import RerankerConfig, load_reranker
from twofold.search.retrievers import RETRIEVERS
from twofold.train.distill import (
    DistillConfig,
    build_examples,
    min_max,
    teacher_scores,
)
from twofold.train.losses import flops, margin_mse
from twofold.train.publish import ARGS_FILE
from twofold.train.reranker import (
    MarginExample,
    RerankerTrainConfig,
    train_reranker,
)

WORDS = ["the", "a", "of", "and", "boundary", "layer", "heat", "transfer", "flow", "laminar"]
WORDS += ["shells", "wings", "supersonic", "lift", "drag", "buckling", "pressure", "turbulent"]


def save_tiny_bert(directory: Path) -> Path:
    """A random 2-layer, hidden-32 BERT encoder + WordPiece tokenizer (the student's base)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("base") / "tiny")


def test_margin_mse_by_hand() -> None:
    s_pos, s_neg = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    t_pos, t_neg = torch.tensor([3.0, 1.0]), torch.tensor([0.0, 0.0])
    # margins: student (1, -1), teacher (3, 1) -> errors (-2, -2) -> mean of squares 4
    assert float(margin_mse(s_pos, s_neg, t_pos, t_neg)) == pytest.approx(4.0)
    # only margins count: shifting all student scores changes nothing
    assert float(margin_mse(s_pos + 7, s_neg + 7, t_pos, t_neg)) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        margin_mse(s_pos, s_neg[:1], t_pos, t_neg)


def test_flops_by_hand() -> None:
    w = torch.tensor([[1.0, 0.0, -2.0], [3.0, 0.0, 0.0]])
    # column means of |w|: (2, 0, 1) -> 4 + 0 + 1
    assert float(flops(w)) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        flops(w[0])


EXAMPLES = [
    MarginExample("heat transfer", "laminar heat transfer", "lift and drag of wings", 2.0, 0.0),
    MarginExample("wings lift", "lift and drag of wings", "buckling of shells", 1.5, 0.0),
    MarginExample("supersonic flow", "supersonic flow", "heat transfer", 2.0, 0.5),
    MarginExample("shells", "buckling of shells under pressure", "turbulent flow", 2.0, 0.0),
]


def test_loop_learns_and_saves_a_loadable_reranker(base_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    config = RerankerTrainConfig(
        base=str(base_dir), epochs=40, batch_size=4, lr=5e-3, max_length=32, device="cpu"
    )
    result = train_reranker(EXAMPLES, out, config, extra_args={"note": "test"})
    assert result.steps == 40
    first, last = result.losses[:5], result.losses[-5:]
    assert sum(last) / 5 < 0.5 * (sum(first) / 5), result.losses
    args = json.loads((out / ARGS_FILE).read_text())
    assert args["steps"] == 40 and args["note"] == "test" and args["lr"] == 5e-3
    assert args["final_loss"] == pytest.approx(result.final_loss)

    reranker = load_reranker(RerankerConfig(str(out), max_length=32))
    scores = reranker.score("heat transfer", ["laminar heat transfer", "lift and drag of wings"])
    assert len(scores) == 2
    # the student learnt the teacher's preference on a training pair
    assert scores[0] > scores[1]


def test_loop_refuses_bad_input(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        train_reranker([], tmp_path / "x", RerankerTrainConfig(base=str(base_dir)))
    with pytest.raises(InputError):
        RerankerTrainConfig(epochs=0)


def test_teacher_scores_by_hand() -> None:
    a = Ranking("q", (Hit("d1", 10.0), Hit("d2", 6.0), Hit("d3", 2.0)))
    b = Ranking("q", (Hit("d2", 0.9), Hit("d4", 0.5)))
    assert min_max(a) == {"d1": 1.0, "d2": 0.5, "d3": 0.0}
    assert min_max(Ranking("q", (Hit("x", 3.0),))) == {"x": 1.0}
    t = teacher_scores({"a": a, "b": b}, scale=10.0)
    # d2: (0.5 + 1) / 2; d1: (1 + 0) / 2; d3: (0 + 0) / 2; d4: (0 + 0) / 2
    assert t == {"d2": 7.5, "d1": 5.0, "d3": 0.0, "d4": 0.0}
    assert list(t) == ["d2", "d1", "d3", "d4"]


@pytest.fixture
def tiny_beir(tiny_corpus: Path, tmp_path: Path) -> tuple[Collection, BeirDataset]:
    build_collection(tiny_corpus, tmp_path / "coll", BuildOptions(progress=False))
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(tiny_corpus.read_text())
    queries = [
        {"_id": "q1", "text": "boundary layer heat"},
        {"_id": "q2", "text": "wings lift pressure"},
        {"_id": "q3", "text": "supersonic"},
        {"_id": "q9", "text": "not in the split"},
    ]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td5\t0\nq2\td4\t2\nq3\td2\t1\n"
    (root / "qrels" / "train.tsv").write_text(qrels)
    return Collection(tmp_path / "coll"), BeirDataset(root)


def test_examples_from_a_bm25_collection(tiny_beir: tuple[Collection, BeirDataset]) -> None:
    collection, dataset = tiny_beir
    config = DistillConfig(teachers=("bm25",), depth=10, negatives=2, scale=10.0)
    examples = build_examples(collection, dataset, "train", config)
    qrels = dataset.qrels("train")
    texts = {d.contents: d.doc_id for d in collection.docs}
    bm25 = RETRIEVERS.get("bm25")(collection)
    by_query = {"boundary layer heat": "q1", "wings lift pressure": "q2"}
    # q3's positive d2 is not retrieved for "supersonic": that query gives no example
    assert {e.query for e in examples} == set(by_query)
    for e in examples:
        qid = by_query[e.query]
        pos, neg = texts[e.pos_text], texts[e.neg_text]
        assert qrels[qid][pos] >= 1
        assert qrels[qid].get(neg, 0) < 1
        expected = {h: 10.0 * s for h, s in min_max(bm25.retrieve(Query(qid, e.query), 10)).items()}
        assert e.teacher_pos == pytest.approx(expected[pos])
        assert e.teacher_neg == pytest.approx(expected[neg])
    q1 = [e for e in examples if e.query == "boundary layer heat"]
    # d1 (judged relevant) is the only positive; d5 is judged non-relevant, so a negative
    assert {texts[e.pos_text] for e in q1} == {"d1"}
    assert "d5" in {texts[e.neg_text] for e in q1}
    assert len(q1) <= 2

    with pytest.raises(InputError, match="dense"):
        build_examples(collection, dataset, "train", DistillConfig(teachers=("bm25", "dense")))


def test_cli_train_reranker(
    tiny_beir: tuple[Collection, BeirDataset],
    base_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    collection, dataset = tiny_beir
    out = tmp_path / "model"
    argv = ["train", "reranker", str(collection.path), "--dataset", str(dataset.root)]
    argv += ["--out", str(out), "--base", str(base_dir), "--teachers", "bm25"]
    argv += ["--epochs", "2", "--batch-size", "2", "--max-length", "32", "--device", "cpu"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] >= 2
    args = json.loads((out / ARGS_FILE).read_text())
    assert args["teachers"] == ["bm25"] and args["split"] == "train" and args["epochs"] == 2
    assert load_reranker(RerankerConfig(str(out))).score("heat", ["heat transfer"])
