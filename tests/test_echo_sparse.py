"""Echo SPLADE over a causal LM (arXiv 2408.11119) on a tiny random Llama: the pooling
reads the second copy only (against the model's own logits), the weights are
non-negative with special tokens 0, the training forward equals the serving path, a
tiny collection builds with --sparse-model/--splade-model = the causal LM and both
retrievers search, and ``train sparse`` trains it into a directory that loads again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from twofold.core.types import Query
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, SparseOptions
from twofold.indexing.collection import Collection
from twofold.models.echo import EchoSparseEncoder, is_causal_lm, load_sparse_encoder
from twofold.models.sparse import IdfQueryEncoder, MLMSparseEncoder, load_tokenizer, model_idf
from twofold.search.pipeline import build_pipeline
from twofold.train.sparse import SparseExample, SparseTrainConfig, train_sparse

from .conftest import TINY_DOCS
from .test_sparse_unit import make_tiny_model

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


def make_tiny_causal_lm(directory: Path) -> Path:
    """A random 2-layer Llama + a word-level tokenizer that adds BOS (as Llama's does)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    texts = [f"{d['title']} {d['text']}".lower() for d in TINY_DOCS] + ["passage again:"]
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    vocab = {t: i for i, t in enumerate(SPECIAL + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )  # no pad token: the encoder pads with EOS, as for GPT-2 / Llama
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=48,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    directory.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def causal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("echo") / "llama")


def test_detects_causal_and_masked(causal: Path, tmp_path: Path) -> None:
    mlm = make_tiny_model(tmp_path / "mlm", with_idf=False)
    assert is_causal_lm(causal) and not is_causal_lm(mlm)
    assert isinstance(load_sparse_encoder(causal), EchoSparseEncoder)
    masked = load_sparse_encoder(mlm)
    assert type(masked) is MLMSparseEncoder


def test_echo_pools_the_second_copy_only(causal: Path) -> None:
    enc = EchoSparseEncoder(causal, max_length=64)
    assert enc.max_length < 24  # capped: prefix + 2 copies + again fit 48 positions
    texts = ["laminar boundary layer heat transfer", "lift and drag"]
    ids = enc.tokenize(texts, enc.max_length)
    assert all(enc.tokenizer.bos_token_id not in x for x in ids)
    got = enc.encode_ids(ids).toarray()
    special = enc.tokenizer.all_special_ids
    for r, x in enumerate(ids):
        # by hand: the full model's logits over the echoed sequence, BOS included
        prefix = enc.tokenizer("Passage:")["input_ids"]
        assert prefix[0] == enc.tokenizer.bos_token_id
        again = enc.tokenizer(" Passage again:", add_special_tokens=False)["input_ids"]
        seq = prefix + x + again + x
        with torch.no_grad():
            logits = enc.model(input_ids=torch.tensor([seq])).logits[0].numpy()
        start = len(prefix) + len(x) + len(again)
        second = np.log1p(np.maximum(logits[start:].max(axis=0), 0.0))
        first = np.log1p(np.maximum(logits[len(prefix) : len(prefix) + len(x)].max(0), 0.0))
        second[special] = 0.0
        first[special] = 0.0
        assert np.allclose(got[r], second, atol=1e-5)
        assert not np.allclose(got[r], first, atol=1e-3)  # not the first copy's max
        # a causal model: changing the last token changes the second copy's first
        # position (it has seen the whole first copy) but never the first copy's
        changed = [*x[:-1], x[0]]
        seq2 = prefix + changed + again + changed
        with torch.no_grad():
            logits2 = enc.model(input_ids=torch.tensor([seq2])).logits[0].numpy()
        assert np.allclose(logits2[: len(prefix) + len(x) - 1], logits[: len(prefix) + len(x) - 1])
        assert not np.allclose(logits2[start], logits[start])
    assert (got >= 0).all() and (got[:, special] == 0).all()
    assert (got > 0).sum(axis=1).min() > 0


@pytest.mark.parametrize("side", ["right", "left"])
def test_training_forward_equals_serving(causal: Path, side: str) -> None:
    enc = EchoSparseEncoder(causal, max_length=16)
    texts = ["supersonic flow over a flat plate with shocks", "thin shells"]
    enc.tokenizer.padding_side = side
    batch = enc.tokenizer(texts, truncation=True, max_length=16, padding=True, return_tensors="pt")
    w = enc.forward(batch["input_ids"], batch["attention_mask"])
    assert w.requires_grad
    served = enc.encode_docs(texts).toarray()
    assert np.allclose(w.detach().numpy(), served, atol=1e-5)
    # the siamese query side is the same activation
    ids, weights = enc.encode_query("thin shells")
    assert np.allclose(weights, served[1][ids], atol=1e-6) and len(ids) == (served[1] > 0).sum()


def _build(root: Path, model: Path, precision: str = "auto") -> Collection:
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS), encoding="utf-8")
    options = BuildOptions(
        retrievers=("sparse", "splade"),
        sparse=SparseOptions(model=str(model), precision=precision),
        splade=SparseOptions(model=str(model), precision=precision),
        max_length=32,
        batch_size=2,
        progress=False,
    )
    build_collection(corpus, root / "c", options)
    return Collection(root / "c")


def test_echo_stays_float32_and_splade_reuses_its_documents(causal: Path, tmp_path: Path) -> None:
    """bfloat16 asked of an echo encoder: it encodes in float32, every record says so,
    and ``splade`` still takes ``sparse``'s documents (the precisions match)."""
    coll = _build(tmp_path, causal, precision="bf16")
    entries = coll.manifest.sub_indexes
    assert entries["sparse"]["precision"] == entries["splade"]["precision"] == "fp32"
    assert str(entries["splade"].get("doc_side", "")).startswith("copied from the sparse")
    # the echo caps max_length (48 positions hold two copies): the asked one is kept too
    assert entries["splade"]["max_length"] < entries["splade"]["echo"]["max_length_asked"] == 32


def test_collection_builds_and_searches(causal: Path, tmp_path: Path) -> None:
    coll = _build(tmp_path, causal)
    tokenizer = load_tokenizer(causal)
    for name in ("sparse", "splade"):
        entry = coll.manifest.sub_indexes[name]
        assert entry["echo"]["again"] == " Passage again:"
        assert entry["vocab_size"] == len(tokenizer)
    entry = coll.manifest.sub_indexes["sparse"]
    assert entry["idf"]["source"] == "collection"
    # idf over the causal tokenizer: "boundary" (2 of 5 docs) by BM25's formula
    idf = coll.index("sparse").idf()
    j = tokenizer.convert_tokens_to_ids("boundary")
    assert idf[j] == pytest.approx(np.log1p((5 - 2 + 0.5) / (2 + 0.5)), rel=1e-5)
    query_side = coll.index("sparse").query_encoder()
    assert isinstance(query_side, IdfQueryEncoder)
    assert (query_side.idf[tokenizer.all_special_ids] == 0).all()
    ids, weights = query_side.encode_query("boundary boundary layer")
    assert j in ids and weights[list(ids).index(j)] == pytest.approx(idf[j])
    assert isinstance(coll.index("splade").query_encoder(), EchoSparseEncoder)
    for name in ("sparse", "splade"):
        ranking = build_pipeline(coll, name).search(Query("q", "boundary layer heat"), 3)
        assert len(ranking.doc_ids()) > 0, name
    top = build_pipeline(coll, "sparse").search(Query("q", "buckling shells"), 1)
    assert top.doc_ids() == ["d2"]  # inference-free: only d2 has these tokens


def test_train_sparse_accepts_a_causal_lm(causal: Path, tmp_path: Path) -> None:
    texts = [f"{d['title']} {d['text']}".strip() for d in TINY_DOCS]
    examples = [
        SparseExample("heat transfer boundary", tuple(texts[:4]), (30.0, 0.0, 0.0, 10.0)),
        SparseExample("wings lift", tuple(texts[1:5]), (0.0, 0.0, 30.0, 5.0)),
    ]
    idf = np.ones(len(load_tokenizer(causal)), dtype=np.float32)
    config = SparseTrainConfig(
        base=str(causal), epochs=10, batch_size=2, lr=3e-3, max_length=16, lambda_max=0.0
    )
    out = tmp_path / "student"
    result = train_sparse(examples, idf, out, config)
    assert result.steps == 10
    assert sum(result.kl[-3:]) / 3 < sum(result.kl[:3]) / 3, result.kl
    # the output directory loads as an echo encoder again (what the build loads) and
    # ships the idf.json the inference-free build then uses instead of the collection's
    student = load_sparse_encoder(out)
    assert isinstance(student, EchoSparseEncoder)
    shipped = model_idf(out, student.tokenizer)
    assert shipped is not None and shipped[student.tokenizer.convert_tokens_to_ids("lift")] == 1.0
    weights = student.encode_docs(texts).toarray()
    assert (weights >= 0).all() and (weights.sum(axis=1) > 0).all()
