"""Learned sparse: encoder formulas, pruning, idf, index build/search/resume, both engines.

A tiny random ``BertForMaskedLM`` is saved in the OpenSearch doc-only layout (config,
safetensors, tokenizer, ``idf.json``), and a copy without ``idf.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from twofold.core.errors import InputError
from twofold.core.types import Query
from twofold.indexing.build import build_collection, partial_dir
from twofold.indexing.buildctx import BuildOptions, SparseOptions
from twofold.indexing.collection import Collection
from twofold.indexing.sparse.index import quantize
from twofold.indexing.sparse.seismic import SeismicParams
from twofold.models import sparse as msparse
from twofold.models.sparse import (
    IdfQueryEncoder,
    MLMSparseEncoder,
    Pruning,
    activation,
    idf_from_df,
    load_idf_json,
    prune,
)
from twofold.search.pipeline import build_pipeline
from twofold.search.sparse import SparseSearcher, explain_ranking

from .conftest import TINY_DOCS

WORDS = sorted({w for d in TINY_DOCS for w in f"{d['title']} {d['text']}".lower().split()})
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + WORDS + ["##s", "aero"]


def make_tiny_model(directory: Path, with_idf: bool) -> Path:
    """Random 1-layer BERT MLM + WordPiece tokenizer (+ idf.json) saved to ``directory``."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if with_idf:
        idf = {tok: round(0.5 + 0.1 * i, 3) for i, tok in enumerate(VOCAB[5:])}
        idf["flow"] = -1.0  # a negative idf: relu makes it 0
        (directory / "idf.json").write_text(json.dumps(idf))
    return directory


def build_tiny_collection(root: Path, retrievers: tuple[str, ...], with_idf: bool) -> Collection:
    """TINY_DOCS built into ``root/c`` with a tiny MLM (in ``root/mlm``) for sparse/splade."""
    model = make_tiny_model(root / "mlm", with_idf=with_idf)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS), encoding="utf-8")
    options = BuildOptions(
        retrievers=retrievers,
        sparse=SparseOptions(model=str(model)),
        splade=SparseOptions(model=str(model)),
        max_length=32,
        batch_size=2,
        progress=False,
    )
    build_collection(corpus, root / "c", options)
    return Collection(root / "c")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "with_idf": make_tiny_model(root / "doc-only", with_idf=True),
        "no_idf": make_tiny_model(root / "plain", with_idf=False),
    }


# --------------------------------------------------------------------------- formulas
def test_activation_hand_computed() -> None:
    x = torch.tensor([-2.0, 0.0, 1.0, math.e - 1.0])
    assert activation(x).tolist() == pytest.approx([0.0, 0.0, math.log(2.0), 1.0])


def test_idf_formula_hand_computed() -> None:
    # N = 4: df 0 -> log(1 + 4.5/0.5) = log 10; df 4 -> log(1 + 0.5/4.5) = log(10/9)
    got = idf_from_df(np.array([0, 1, 4]), 4)
    assert got.tolist() == pytest.approx([math.log(10), math.log(1 + 3.5 / 1.5), math.log(10 / 9)])


def test_pruning_top_k_and_max_ratio() -> None:
    m = sp.csr_matrix(np.array([[0.0, 3.0, 1.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]]))
    top2 = prune(m, Pruning(top_k=2)).toarray()
    assert top2.tolist() == [[0.0, 3.0, 0.0, 2.0, 0.0], [0.0] * 5]
    ratio = prune(m, Pruning(max_ratio=0.4)).toarray()  # keep w >= 1.2
    assert ratio.tolist() == [[0.0, 3.0, 0.0, 2.0, 0.0], [0.0] * 5]
    both = prune(m, Pruning(top_k=1, max_ratio=0.1)).toarray()
    assert both.tolist() == [[0.0, 3.0, 0.0, 0.0, 0.0], [0.0] * 5]


@pytest.mark.parametrize("vocab_tile", [4096, 10])  # 10: several tiles, a ragged last one
def test_doc_encoder_matches_the_formula(tiny_models: dict[str, Path], vocab_tile: int) -> None:
    # token_budget 7 < text length: texts split into slices with a running max
    enc = MLMSparseEncoder(
        tiny_models["no_idf"], max_length=32, token_budget=7, vocab_tile=vocab_tile
    )
    texts = [f"{d['title']} {d['text']}" for d in TINY_DOCS]
    got = enc.encode_docs(texts, batch_size=2).toarray()
    for text, row in zip(texts, got, strict=True):
        ids = enc.tokenizer(text, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            logits = enc.model(**ids).logits[0]  # (L, V), no padding
        expected = torch.log1p(torch.relu(logits.max(dim=0).values))
        expected[enc.special] = 0.0
        assert np.allclose(row, expected.numpy(), atol=1e-5)
        assert np.all(row[enc.special] == 0.0)


def test_doc_encoder_pruning(tiny_models: dict[str, Path]) -> None:
    enc = MLMSparseEncoder(tiny_models["no_idf"], pruning=Pruning(top_k=3))
    got = enc.encode_docs(["laminar boundary layer heat transfer", "wings"])
    assert list(np.diff(got.indptr)) == [3, 3]


def test_idf_query_encoder_hand_computed(tiny_models: dict[str, Path]) -> None:
    tok = msparse.load_tokenizer(tiny_models["with_idf"])
    idf = load_idf_json(tiny_models["with_idf"] / "idf.json", tok)
    vocab = tok.get_vocab()
    enc = IdfQueryEncoder(tok, idf)
    row = enc.encode_queries(["heat heat transfer flow [CLS]"]).toarray()[0]
    expected = np.zeros(len(VOCAB), dtype=np.float32)
    table = json.loads((tiny_models["with_idf"] / "idf.json").read_text())
    expected[vocab["heat"]] = table["heat"]  # repeated token counted once
    expected[vocab["transfer"]] = table["transfer"]
    # "flow" has idf -1 -> relu -> 0; [CLS] is special -> 0
    assert np.allclose(row, expected)
    # the one-text path (Rust tokenizer directly) gives the same ids as tokenizer(...)
    texts = ["heat heat transfer flow [CLS]", "Thin SHELLS, buckling!", "aeros", ""]
    for text in texts:
        ids, w = enc.encode_query(text)
        slow = tok(text, add_special_tokens=False)["input_ids"]
        kept = sorted({j for j in slow if enc.idf[j] > 0})
        assert ids.tolist() == kept
        assert np.allclose(w, enc.idf[kept])
    # query-side pruning: tokens with idf < min_idf are dropped, the rest unchanged
    pruned = IdfQueryEncoder(tok, idf, min_idf=table["heat"] + 1e-3)
    ids, w = pruned.encode_query("heat heat transfer flow [CLS]")
    assert table["transfer"] > table["heat"]
    assert ids.tolist() == [vocab["transfer"]] and np.allclose(w, [table["transfer"]])
    with pytest.raises(InputError):
        IdfQueryEncoder(tok, idf, min_idf=-1.0)


# ----------------------------------------------------------------------------- index
def _build(
    corpus: Path, out: Path, model: Path, splade_top_k: int | None = None, **sparse: Any
) -> Collection:
    options = BuildOptions(
        retrievers=("sparse", "splade"),
        sparse=SparseOptions(model=str(model), **sparse),
        splade=SparseOptions(model=str(model), top_k=splade_top_k, **sparse),
        max_length=32,
        batch_size=2,
        progress=False,
    )
    build_collection(corpus, out, options)
    return Collection(out)


def _dense(index: Any) -> np.ndarray:
    """The index's doc x V matrix rebuilt from its postings (for reference products)."""
    n, v = len(index.doc_ids), len(index.native.indptr) - 1
    csc = sp.csc_matrix(
        (np.asarray(index.native.weights), np.asarray(index.native.docs), index.native.indptr),
        shape=(n, v),
    )
    return np.asarray(csc.toarray(), dtype=np.float64)


@pytest.mark.parametrize("variant", ["with_idf", "no_idf"])
def test_build_and_search_both_engines(
    variant: str, tiny_models: dict[str, Path], tiny_corpus: Path, tmp_path: Path
) -> None:
    # splade pruned differently: its own document encoding (no reuse of sparse's)
    coll = _build(tiny_corpus, tmp_path / "c", tiny_models[variant], splade_top_k=6)
    assert "doc_side" not in coll.manifest.sub_indexes["splade"]
    assert coll.manifest.sub_indexes["splade"]["pruning"]["top_k"] == 6
    entry = coll.manifest.sub_indexes["sparse"]
    assert entry["idf"]["source"] == ("idf.json" if variant == "with_idf" else "collection")
    assert entry["encoder"]["sha256"] != "unknown"
    assert entry["quantization"]["scale"] == 100.0
    queries = ["boundary layer heat", "thin shells buckling", "supersonic flow wings"]
    for name in ("sparse", "splade"):
        index = coll.index(name)
        matrix = _dense(index)
        native, lucene = SparseSearcher(index, "native"), SparseSearcher(index, "lucene")
        for text in queries:
            q = native.encode(text)
            qdense = np.zeros(matrix.shape[1])
            qdense[list(q.indices)] = q.values
            exact = matrix @ qdense
            hits = native.search(text, 5)
            assert hits, (name, text)
            for doc_id, score in hits:
                assert score == pytest.approx(exact[index.ordinal(doc_id)], rel=1e-5, abs=1e-6)
            expected = [index.doc_ids[i] for i in np.argsort(-exact, kind="stable") if exact[i] > 0]
            assert [d for d, _ in hits] == expected[:5]
            # seismic on 6 documents prunes nothing: the exact top 5, the exact scores
            assert SparseSearcher(index, "seismic").search(text, 5) == hits
            # Lucene: integer product of the quantized matrices, divided by scale^2
            s = index.scale
            qint = np.zeros(matrix.shape[1])
            qint[list(q.indices)] = quantize(np.asarray(q.values), s)
            ints = quantize(matrix, s) @ qint / (s * s)
            for doc_id, score in lucene.search(text, 5):
                assert score == pytest.approx(ints[index.ordinal(doc_id)], rel=1e-5)
            # explanations sum to the score, in each engine's arithmetic
            for searcher, ranked in ((native, hits), (lucene, lucene.search(text, 5))):
                for doc_id, score in ranked:
                    parts = searcher.explain(text, doc_id)
                    total = sum(c.contribution for c in parts)
                    assert total == pytest.approx(score, rel=1e-4, abs=1e-5)
    ranking = build_pipeline(coll, "sparse").search(Query("q", "heat transfer"), 3)
    explained = explain_ranking(coll, "heat transfer", ranking)
    assert set(explained) == set(ranking.doc_ids())
    assert set(next(iter(explained.values()))) == {"sparse", "splade"}


def test_resume_keeps_finished_shards(
    tiny_models: dict[str, Path], tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_models["no_idf"]
    real = MLMSparseEncoder.encode_ids
    calls: list[int] = []

    def crash_on_second(self: MLMSparseEncoder, ids: Any, batch_size: int = 32) -> sp.csr_matrix:
        calls.append(len(ids))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real(self, ids, batch_size)

    monkeypatch.setattr(MLMSparseEncoder, "encode_ids", crash_on_second)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _build(tiny_corpus, out, model, shard_size=2)
    shard0 = partial_dir(out) / "sparse" / "shards" / "shard-00000.npz"
    assert shard0.is_file() and not out.exists()
    stamp = shard0.stat().st_mtime_ns

    monkeypatch.setattr(MLMSparseEncoder, "encode_ids", real)
    resumed_calls: list[int] = []

    def counting(self: MLMSparseEncoder, ids: Any, batch_size: int = 32) -> sp.csr_matrix:
        resumed_calls.append(len(ids))
        if shard0.exists():
            assert shard0.stat().st_mtime_ns == stamp  # never rewritten
        return real(self, ids, batch_size)

    monkeypatch.setattr(MLMSparseEncoder, "encode_ids", counting)
    # other Seismic knobs (not document parameters) keep the finished shards too
    resumed = _build(tiny_corpus, out, model, shard_size=2, seismic=SeismicParams(query_cut=3))
    # sparse: shards 1 and 2 (2 + 1 docs) only; splade reuses the sparse doc side
    assert resumed_calls == [2, 1]
    assert resumed.manifest.sub_indexes["sparse"]["seismic"]["query_cut"] == 3
    assert "doc_side" in resumed.manifest.sub_indexes["splade"]
    monkeypatch.setattr(MLMSparseEncoder, "encode_ids", real)
    fresh = _build(tiny_corpus, tmp_path / "fresh", model, shard_size=2)
    assert np.allclose(_dense(resumed.index("sparse")), _dense(fresh.index("sparse")))


def test_cli_build_flags_reach_the_manifest(
    tiny_models: dict[str, Path], tiny_corpus: Path, tmp_path: Path
) -> None:
    from twofold.app.cli import main

    out = tmp_path / "cli"
    model = str(tiny_models["with_idf"])
    code = main(
        ["index", "build", str(tiny_corpus), "--out", str(out), "--retrievers", "sparse,splade",
         "--sparse-model", model, "--splade-model", model, "--max-length", "32", "--quiet",
         "--prune-top-k", "4", "--prune-max-ratio", "0.2", "--quant-scale", "50",
         "--sparse-engine", "lucene"]
    )  # fmt: skip
    assert code == 0
    coll = Collection(out)
    for name in ("sparse", "splade"):
        entry = coll.manifest.sub_indexes[name]
        assert entry["pruning"] == {"top_k": 4, "max_ratio": 0.2}
        assert entry["quantization"]["scale"] == 50.0
        assert entry["default_engine"] == "lucene"
        assert entry["engines"] == ["native", "lucene", "seismic"]
        index = coll.index(name)
        assert index.engine().name == "lucene"
        assert np.bincount(np.asarray(index.native.docs)).max() <= 4  # terms per doc


def test_sparse_options_reject_bad_values_naming_the_flag() -> None:
    assert SparseOptions(top_k=3).built_engines == ["native", "lucene", "seismic"]
    with pytest.raises(InputError, match="--sparse-engine must be one of"):
        SparseOptions(engine="faiss")
    with pytest.raises(InputError, match="--quant-scale must be > 0"):
        SparseOptions(scale=0.0)
    with pytest.raises(InputError, match="--sparse-engine lucene is not built"):
        SparseOptions(engine="lucene", engines=("seismic",))
