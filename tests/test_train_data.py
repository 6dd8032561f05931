"""Training data: pseudo-queries (inverse cloze) with the sentence taken out of their
source, unlabelled query files, the leak-free held-out split, the anchored fused teacher,
and the staged output every trainer writes through."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.test_sparse_unit import build_tiny_collection
from twofold.core.errors import InputError
from twofold.core.types import Doc, Query
from twofold.indexing.corpus import BeirDataset
from twofold.models.registry import model_cache
from twofold.train.publish import ARGS_FILE, CARD_FILE, check_output, publish_model
from twofold.train.queries import (
    PseudoConfig,
    TrainQuery,
    file_queries,
    holdout_split,
    inverse_cloze,
    sentences,
    shown_text,
    split_queries,
)
from twofold.train.teacher import Teacher, TeacherConfig, default_fusion

DOC = Doc(
    "d9",
    "Shock waves",
    "Shock waves form ahead of blunt bodies. The stand-off distance grows with the "
    "Mach number of the free stream. Heating is greatest at the stagnation point.",
)


def test_sentences_split_on_terminal_punctuation() -> None:
    assert sentences(DOC.text) == [
        "Shock waves form ahead of blunt bodies.",
        "The stand-off distance grows with the Mach number of the free stream.",
        "Heating is greatest at the stagnation point.",
    ]


def test_inverse_cloze_takes_the_sentence_out_of_what_models_see() -> None:
    config = PseudoConfig(min_words=6, max_words=40)
    made = inverse_cloze(DOC, random.Random(3), config)
    assert made is not None
    sentence = made.query.text
    assert sentence in sentences(DOC.text)
    assert made.positives == {"d9": 1}
    shown = shown_text(DOC, made.hidden)
    assert sentence not in shown
    # everything else of the document is still there, title first
    assert shown.startswith("Shock waves\n")
    others = [s for s in sentences(DOC.text) if s != sentence]
    assert all(s in shown for s in others)


def test_inverse_cloze_skips_one_sentence_documents() -> None:
    one = Doc("d1", "", "Only one sentence in this document here.")
    assert inverse_cloze(one, random.Random(0), PseudoConfig()) is None


def test_file_queries_plain_and_json(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text('heat transfer\n\n{"_id": "u7", "text": "thin shells"}\n')
    got = file_queries(path)
    assert [(t.query.query_id, t.query.text) for t in got] == [
        ("q1", "heat transfer"),
        ("u7", "thin shells"),
    ]
    assert all(not t.positives for t in got)
    path.write_text('{"_id": "u7"}\n')
    with pytest.raises(InputError, match=r"q.txt:1"):
        file_queries(path)


def test_split_queries_refuse_the_test_split(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(InputError, match="test split"):
        split_queries(BeirDataset(tmp_path), "test")


def test_holdout_split_shares_no_positive() -> None:
    queries = [TrainQuery(Query(f"q{i}", "x"), {f"d{i % 7}": 1}) for i in range(40)]
    train, held = holdout_split(queries, 0.25, seed=1)
    assert len(held) == 10
    held_docs = {d for t in held for d in t.positives}
    assert not any(held_docs.intersection(t.positives) for t in train)
    assert {t.query.query_id for t in train}.isdisjoint(t.query.query_id for t in held)


def test_holdout_of_a_mix_holds_out_real_queries_only() -> None:
    real = [TrainQuery(Query(f"q{i}", "x"), {f"d{i}": 1}) for i in range(20)]
    pseudo = [
        TrainQuery(Query(f"pseudo-d{i}", "s"), {f"d{i}": 1}, {f"d{i}": "s"}) for i in range(40)
    ]
    train, held = holdout_split(real + pseudo, 0.25, seed=2)
    assert len(held) == 5 and all(not t.hidden for t in held)
    held_docs = {d for t in held for d in t.positives}
    # pseudo-queries made from a held-out positive are dropped with the real ones
    assert not any(held_docs.intersection(t.positives) for t in train)
    assert sum(bool(t.hidden) for t in train) == 40 - len(held_docs & {f"d{i}" for i in range(40)})


def test_default_fusion_gives_one_vote_per_model_family() -> None:
    fusion = default_fusion(["bm25", "sparse", "splade", "dense"])
    assert fusion.method == "convex"
    w = dict(fusion.weights or {})
    assert w["bm25"] == pytest.approx(1 / 3)
    assert w["dense"] == pytest.approx(1 / 3)
    assert w["sparse"] == pytest.approx(1 / 6) == pytest.approx(w["splade"])


def test_teacher_anchors_known_positives_above_every_negative(tmp_path: Path) -> None:
    collection = build_tiny_collection(tmp_path, ("bm25",), with_idf=True)
    teacher = Teacher(collection, TeacherConfig(depth=5, anchor=0.1))
    # d5 is not the best lexical match for this query; the label puts it on top anyway
    tq = TrainQuery(Query("q", "laminar boundary layer heat transfer"), {"d5": 1})
    judged = teacher.judge(tq)
    assert judged.positives == ("d5",)
    assert "d5" not in judged.negatives
    assert judged.negatives[0] == "d1"
    assert judged.scores["d5"] == pytest.approx(1.1)
    assert judged.scores["d1"] == pytest.approx(1.0)
    assert all(judged.scores[n] <= 1.0 for n in judged.negatives)


def test_staged_output_refuses_the_model_cache_and_foreign_dirs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="model cache"):
        check_output(model_cache() / "my-model")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="no Twofold trainer made"):
        check_output(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_staged_output_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "model"
    record = {"trainer": "test", "steps": 3, "seed": 0, "metrics": {"ndcg@10": 0.5}}
    publish_model(out, lambda d: (d / "w.txt").write_text("v1"), record)
    assert (out / "w.txt").read_text() == "v1"
    assert json.loads((out / ARGS_FILE).read_text())["steps"] == 3
    card = (out / CARD_FILE).read_text()
    assert "ndcg@10" in card and "steps: 3" in card

    def crash(d: Path) -> None:
        (d / "w.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        publish_model(out, crash, record)
    assert (out / "w.txt").read_text() == "v1"  # the earlier result is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging left behind
    publish_model(out, lambda d: (d / "w.txt").write_text("v2"), record)
    assert (out / "w.txt").read_text() == "v2"
