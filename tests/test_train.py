"""Reranker distillation: Margin-MSE and FLOPS by hand, the training loop on a tiny
random BERT, the example builder (fused anchored teacher) on a tiny BM25 collection,
and the CLI end to end (alpha tuned on held-out queries, stored, read back)."""

from __future__ import annotations

import contextlib
import json
import math
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
from twofold.models.reranker import SETTINGS_FILE, RerankerConfig, load_reranker
from twofold.train.distill import (
    DistillConfig,
    build_examples,
    min_max,
    pick_negatives,
    teacher_scores,
)
from twofold.train.losses import flops, localized_contrastive, margin_mse
from twofold.train.publish import ARGS_FILE
from twofold.train.queries import TrainQuery, split_queries
from twofold.train.reranker import (
    GroupExample,
    MarginExample,
    RerankerTrainConfig,
    train_reranker,
)
from twofold.train.teacher import Teacher, TeacherConfig

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


def test_localized_contrastive_by_hand() -> None:
    s = torch.tensor([[math.log(3.0), 0.0, 0.0], [0.0, 0.0, 0.0]])
    # row 1: softmax of the positive = 3 / 5; row 2: 1 / 3 (cannot tell them apart)
    expected = (-math.log(3 / 5) + math.log(3.0)) / 2
    assert float(localized_contrastive(s)) == pytest.approx(expected)
    assert float(localized_contrastive(s + 4)) == pytest.approx(expected)
    with pytest.raises(ValueError):
        localized_contrastive(s[:, :1])


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


GROUPS = [
    GroupExample("heat transfer", ("laminar heat transfer", "lift of wings", "shells"), (9, 1, 0)),
    GroupExample("wings lift", ("lift and drag of wings", "buckling of shells", "flow"), (9, 2, 0)),
    GroupExample("shells", ("buckling of shells", "turbulent flow", "heat"), (9, 1, 1)),
]


def test_lce_loop_learns_the_positive(base_dir: Path, tmp_path: Path) -> None:
    config = RerankerTrainConfig(
        base=str(base_dir),
        loss="lce",
        kl_weight=0.5,
        epochs=30,
        batch_size=3,
        lr=5e-3,
        max_length=32,
        device="cpu",
    )
    result = train_reranker(GROUPS, tmp_path / "lce", config)
    first, last = result.losses[:5], result.losses[-5:]
    assert sum(last) / 5 < 0.5 * (sum(first) / 5), result.losses
    args = json.loads((tmp_path / "lce" / ARGS_FILE).read_text())
    assert args["loss"] == "lce" and "2101.08751" in args["method"]
    reranker = load_reranker(RerankerConfig(str(tmp_path / "lce"), max_length=32))
    scores = reranker.score("shells", ["buckling of shells", "turbulent flow", "heat"])
    assert scores[0] == max(scores)
    # the loss and the examples must match
    with pytest.raises(InputError, match="GroupExample"):
        train_reranker(EXAMPLES, tmp_path / "mismatch", config)


def test_bf16_autocast_loop_learns_and_keeps_float32_weights(
    base_dir: Path, tmp_path: Path
) -> None:
    """The mixed-precision path (bfloat16 autocast, as CUDA training uses it) run on the CPU:
    the loss falls as in float32 and the saved weights are float32."""
    import torch

    from twofold.train.loop import mixed_precision

    assert isinstance(mixed_precision("cpu", "auto", torch), contextlib.nullcontext)
    assert isinstance(mixed_precision("cuda", "fp32", torch), contextlib.nullcontext)
    with mixed_precision("cpu", "bf16", torch):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    config = RerankerTrainConfig(
        base=str(base_dir),
        loss="lce",
        epochs=30,
        batch_size=3,
        lr=5e-3,
        max_length=32,
        device="cpu",
        precision="bf16",
    )
    result = train_reranker(GROUPS, tmp_path / "bf16", config)
    first, last = result.losses[:5], result.losses[-5:]
    assert sum(last) / 5 < 0.5 * (sum(first) / 5), result.losses
    assert json.loads((tmp_path / "bf16" / ARGS_FILE).read_text())["precision"] == "bf16"
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
    with pytest.raises(InputError, match="--precision"):
        RerankerTrainConfig(base=str(base_dir), precision="fp16")


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


def test_pick_negatives_hard_first_then_drawn_in_rank_order() -> None:
    import random

    ranked = [f"n{i}" for i in range(10)]
    config = DistillConfig(negatives=5, hard=2)
    picked = pick_negatives(ranked, config, random.Random(0))
    assert picked[:2] == ["n0", "n1"] and len(set(picked)) == 5
    assert picked[2:] == sorted(picked[2:], key=ranked.index)
    assert pick_negatives(ranked[:3], config, random.Random(0)) == ranked[:3]


def test_examples_from_the_fused_teacher(tiny_beir: tuple[Collection, BeirDataset]) -> None:
    collection, dataset = tiny_beir
    queries = split_queries(dataset, "train")
    config = DistillConfig(teachers=("bm25",), depth=10, negatives=2, hard=1, scale=10.0)
    examples = build_examples(collection, queries, config)
    texts = {d.contents: d.doc_id for d in collection.docs}
    teacher = Teacher(collection, TeacherConfig(depth=10, retrievers=("bm25",)))
    by_text = {tq.query.text: tq for tq in queries}
    # every labelled query gives examples, even q3 whose positive bm25 misses (anchored)
    assert {e.query for e in examples} == set(by_text)
    for e in examples:
        tq = by_text[e.query]
        pos, neg = texts[e.pos_text], texts[e.neg_text]
        assert pos in tq.positives and neg not in tq.positives
        judged = teacher.judge(tq)
        assert e.teacher_pos == pytest.approx(10.0 * judged.scores[pos])
        assert e.teacher_neg == pytest.approx(10.0 * judged.scores[neg])
        assert e.teacher_pos > e.teacher_neg  # anchored: every margin points the right way
        assert neg == judged.negatives[0] or neg in judged.negatives[1:]
    q1 = [e for e in examples if e.query == "boundary layer heat"]
    n_neg = len(teacher.judge(by_text["boundary layer heat"]).negatives)
    assert {texts[e.pos_text] for e in q1} == {"d1"} and len(q1) == min(2, n_neg) >= 1

    # unlabelled queries: pairs follow the teacher's own order
    free = [TrainQuery(tq.query) for tq in queries]
    unlabelled = build_examples(collection, free, config)
    assert unlabelled and all(e.teacher_pos > e.teacher_neg for e in unlabelled)
    with pytest.raises(InputError, match="dense"):
        build_examples(collection, queries, DistillConfig(teachers=("bm25", "dense")))


def test_prior_negatives_are_other_queries_positives(
    tiny_beir: tuple[Collection, BeirDataset],
) -> None:
    collection, dataset = tiny_beir
    queries = split_queries(dataset, "train")
    config = DistillConfig(
        teachers=("bm25",), depth=10, negatives=1, hard=1, prior_negatives=2, scale=10.0
    )
    groups = build_examples(collection, queries, config, grouped=True)
    texts = {d.contents: d.doc_id for d in collection.docs}
    teacher = Teacher(collection, TeacherConfig(depth=10, retrievers=("bm25",)))
    by_text = {tq.query.text: tq for tq in queries}
    train_positives = {d for tq in queries for d in tq.positives}
    # a group needs 2 prior negatives besides its hard one: q2's may be too few
    assert {"boundary layer heat", "supersonic"} <= {g.query for g in groups}
    for g in groups:
        tq = by_text[g.query]
        ids = [texts[t] for t in g.texts]
        assert len(ids) == 4 and len(set(ids)) == 4  # positive, 1 hard, 2 prior
        assert ids[0] in tq.positives
        prior = ids[2:]
        # the prior negatives are other queries' positives, never this query's
        assert set(prior) <= train_positives - set(tq.positives)
        judged = teacher.judge(tq)
        for d, score in zip(ids, g.teacher, strict=True):
            assert score == pytest.approx(10.0 * judged.scores.get(d, 0.0))
    # q1's positive is d1; the other queries' positives are d4 and d2: both are its prior
    q1 = [g for g in groups if g.query == "boundary layer heat"]
    assert q1 and {texts[t] for t in q1[0].texts[2:]} == {"d2", "d4"}
    # without prior negatives the groups are what they were
    plain = build_examples(
        collection,
        queries,
        DistillConfig(teachers=("bm25",), depth=10, negatives=1, hard=1),
        grouped=True,
    )
    kept = {g.query for g in groups}
    assert [g.texts[:2] for g in plain if g.query in kept] == [g.texts[:2] for g in groups]
    with pytest.raises(InputError, match="prior-negatives"):
        DistillConfig(prior_negatives=-1)


def test_pick_prior_takes_candidates_first_then_draws() -> None:
    import random

    from twofold.train.distill import pick_prior
    from twofold.train.teacher import Judged

    tq = TrainQuery(Query("q", "x"), positives={"p": 1})
    candidates = ("n0", "o1", "n1", "o2", "o3")  # o*: other queries' positives
    judged = Judged(tq, {d: 1.0 for d in candidates}, ("p",), candidates)
    pool = ["p", "o1", "o2", "o3", "o4", "o5", "o6"]
    # the best-ranked other positives first, skipping one already taken as a negative
    assert pick_prior(judged, ["o1"], pool, 2, random.Random(0)) == ["o2", "o3"]
    # past the candidates, drawn from the rest of the pool: never p, o1 or a repeat
    for seed in range(20):
        got = pick_prior(judged, ["o1"], pool, 4, random.Random(seed))
        assert got[:2] == ["o2", "o3"] and len(set(got)) == 4
        assert set(got[2:]) <= {"o4", "o5", "o6"}
    # a small pool gives what it has (the group is then skipped by the caller)
    assert pick_prior(judged, [], ["p", "o1"], 3, random.Random(0)) == ["o1"]


def test_prior_negatives_refuse_what_they_cannot_do(
    tiny_beir: tuple[Collection, BeirDataset], tmp_path: Path
) -> None:
    from twofold.train.distill import distill_reranker

    collection, dataset = tiny_beir
    queries = split_queries(dataset, "train")
    with pytest.raises(InputError, match="--loss lce"):
        distill_reranker(
            collection,
            queries,
            tmp_path / "m",
            DistillConfig(prior_negatives=1),
            RerankerTrainConfig(loss="margin-mse"),
        )
    with pytest.raises(InputError, match="--alpha-folds"):
        distill_reranker(
            collection,
            queries,
            tmp_path / "m",
            DistillConfig(prior_negatives=1, alpha_folds=2),
            RerankerTrainConfig(loss="lce"),
        )
    assert not (tmp_path / "m").exists()


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
    argv += ["--holdout", "0.34", "--layers", "1", "--loss", "margin-mse"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] >= 1
    args = json.loads((out / ARGS_FILE).read_text())
    assert args["teachers"] == ["bm25"] and args["split"] == "train" and args["epochs"] == 2
    assert args["queries_heldout"] == 1 and args["layers_kept"] == 1
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert settings["alpha_tuned"] and 0.0 <= settings["alpha"] <= 1.0
    assert settings["max_length"] == 32
    reranker = load_reranker(RerankerConfig(str(out)))
    assert reranker.alpha == settings["alpha"] and reranker.max_length == 32
    assert reranker.score("heat", ["heat transfer"])

    # a fixed alpha is stored as given; the test split is refused
    argv2 = [
        *argv[: argv.index("--holdout")],
        "--holdout",
        "0",
        "--alpha",
        "0.3",
        "--loss",
        "margin-mse",
    ]
    assert main(argv2) == 0
    assert json.loads((out / SETTINGS_FILE).read_text())["alpha"] == 0.3
    assert main([*argv, "--split", "test"]) != 0

    # labelled queries train with LCE unless told otherwise; groups need enough negatives
    lce = [*argv[: argv.index("--loss")], "--negatives", "1", "--hard-negatives", "1"]
    assert main(lce) == 0
    assert json.loads((out / ARGS_FILE).read_text())["loss"] == "lce"
    assert main([*lce[: lce.index("--negatives")], "--negatives", "50"]) != 0
    assert "--negatives" in capsys.readouterr().err


def test_fold_split_keeps_shared_positives_together() -> None:
    from twofold.core.types import Query
    from twofold.train.crossfit import fold_split

    def tq(i: int, *docs: str, hidden: bool = False) -> TrainQuery:
        return TrainQuery(
            Query(f"q{i}", f"text {i}"),
            positives={d: 1 for d in docs},
            hidden={docs[0]: "s"} if hidden else {},
        )

    # q0-q1-q2 are linked through d1 and d2; q3..q8 stand alone; q9 is unlabelled and
    # q10 a pseudo-query: neither is ever held out
    queries = [tq(0, "d1"), tq(1, "d1", "d2"), tq(2, "d2"), *(tq(i, f"e{i}") for i in range(3, 9))]
    queries += [TrainQuery(Query("q9", "free")), tq(10, "p1", hidden=True)]
    folds = fold_split(queries, 3, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(9))  # each labelled one once
    assert sorted(len(f) for f in folds) == [3, 3, 3]
    linked = [f for f in folds if 0 in f]
    assert {0, 1, 2} <= set(linked[0])
    for a in folds:  # no positive on both sides of a fold boundary
        inside = {d for i in a for d in queries[i].positives}
        outside = {d for b in folds if b is not a for i in b for d in queries[i].positives}
        assert not inside & outside
    assert fold_split(queries, 3, seed=0) == folds
    with pytest.raises(InputError, match="alpha-folds"):
        fold_split(queries[:3], 2, seed=0)  # one linked group cannot make two folds


def test_cli_train_reranker_cross_fits_alpha(
    tiny_beir: tuple[Collection, BeirDataset], base_dir: Path, tmp_path: Path
) -> None:
    collection, dataset = tiny_beir
    out = tmp_path / "model"
    argv = ["train", "reranker", str(collection.path), "--dataset", str(dataset.root)]
    argv += ["--out", str(out), "--base", str(base_dir), "--teachers", "bm25", "--quiet"]
    argv += ["--epochs", "2", "--batch-size", "2", "--max-length", "32", "--device", "cpu"]
    argv += ["--negatives", "1", "--hard-negatives", "1", "--alpha-folds", "3"]
    assert main(argv) == 0
    settings = json.loads((out / SETTINGS_FILE).read_text())
    # every labelled query (3) was scored out of fold; the kept student saw all of them
    assert settings["alpha_folds"] == 3 and settings["heldout_queries"] == 3
    assert settings["alpha_tuned"] and 0.0 <= settings["alpha"] <= 1.0
    args = json.loads((out / ARGS_FILE).read_text())
    assert args["fold_sizes"] == [1, 1, 1] and args["queries_train"] == 3
    assert args["examples"] == 3  # one LCE group per labelled positive, from all queries
    assert not list(tmp_path.glob(".crossfit-*"))  # the folds' students are cleaned up
    assert load_reranker(RerankerConfig(str(out))).alpha == settings["alpha"]
    assert main([*argv[:-1], "4"]) != 0  # more folds than linked groups: refused
