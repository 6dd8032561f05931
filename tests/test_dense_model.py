"""DenseEncoder: pooling and normalization against a manual computation, on a tiny random
BertModel saved from a config in the sentence-transformers layout (no weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from twofold.core.errors import InputError, ModelError
from twofold.models.dense import DenseEncoder, l2_normalize, pool, read_dense_config

SENTENCE = (
    "heat transfer laminar boundary layer buckling of thin cylindrical shells under pressure "
    "supersonic flow over a flat plate with shocks lift and drag swept wings at low speed "
    "turbulent skin friction measurements query passage the in on"
)
WORDS = SENTENCE.split(" ")


def make_tiny_model(
    directory: Path,
    *,
    hidden: int = 32,
    layers: int = 1,
    pooling: str = "mean",
    prompts: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """A random BertModel + WordPiece tokenizer in the sentence-transformers layout."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), ":"]
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["0", "1", "2", "3"]
    (directory / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": False,
            }
        )
    )
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    if prompts is not None:
        (directory / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": prompts})
        )
    return directory


@pytest.fixture(scope="module")
def tiny_mean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-mean"))


TEXTS = [
    "heat transfer",
    "buckling of thin cylindrical shells under pressure at low speed",
    "lift",
    "supersonic flow over a flat plate with shocks and turbulent skin friction",
]


def manual(directory: Path, text: str, mode: str) -> np.ndarray:
    """One text, no padding, pooled and normalized by hand."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        h = model(**tok(text, return_tensors="pt")).last_hidden_state[0].numpy()
    v = h.mean(axis=0) if mode == "mean" else h[0]
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_pool_by_hand() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    normed = l2_normalize(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).numpy()
    np.testing.assert_allclose(normed, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    with pytest.raises(InputError):
        pool(hidden, mask, "max")


def test_mean_pooling_matches_manual_with_padding_and_sorting(tiny_mean: Path) -> None:
    enc = DenseEncoder(str(tiny_mean), batch_size=3)  # one batch mixes lengths: padding used
    got = enc.encode_docs(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    want = np.stack([manual(tiny_mean, t, "mean") for t in TEXTS])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert enc.encode_docs([]).shape == (0, 32)


def test_cls_pooling_from_config(tmp_path: Path) -> None:
    directory = make_tiny_model(tmp_path / "cls", pooling="cls", seed=1)
    assert read_dense_config(directory).pooling == "cls"
    enc = DenseEncoder(str(directory), batch_size=2)
    want = np.stack([manual(directory, t, "cls") for t in TEXTS])
    np.testing.assert_allclose(enc.encode_queries(TEXTS), want, atol=1e-5)


def test_prefixes_from_prompts_and_arguments(tmp_path: Path) -> None:
    directory = make_tiny_model(
        tmp_path / "e5", prompts={"query": "query: ", "passage": "passage: "}
    )
    enc = DenseEncoder(str(directory))
    assert (enc.query_prefix, enc.doc_prefix) == ("query: ", "passage: ")
    plain = DenseEncoder(str(directory), query_prefix="", doc_prefix="")
    np.testing.assert_allclose(
        enc.encode_queries(["heat transfer"]),
        plain.encode_docs(["query: heat transfer"]),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        enc.encode_docs(["heat transfer"]), plain.encode_docs(["passage: heat transfer"]), atol=1e-6
    )


def test_tokenize_once_then_count_and_encode(tmp_path: Path) -> None:
    """``tokenize_docs`` adds the doc prefix and truncates as ``encode_docs`` does; its
    lengths are the tokenizer's by hand, and ``encode_tokenized`` pools exactly those
    tokens (checked against the model run by hand)."""
    from transformers import AutoTokenizer

    directory = make_tiny_model(tmp_path / "e5", prompts={"passage": "passage: "})
    enc = DenseEncoder(str(directory), max_length=8, batch_size=3)
    tokenized = enc.tokenize_docs(TEXTS)
    tok = AutoTokenizer.from_pretrained(str(directory))
    by_hand = [min(len(tok("passage: " + t)["input_ids"]), 8) for t in TEXTS]
    assert tokenized.lengths == by_hand and tokenized.total == sum(by_hand)
    assert max(by_hand) == 8 > min(by_hand)  # some truncated, some not
    # encoded from those tokens: each text's prefixed, truncated tokens pooled by hand
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory)).eval()
    want = []
    for t in TEXTS:
        ids = tok("passage: " + t, truncation=True, max_length=8, return_tensors="pt")
        with torch.no_grad():
            v = model(**ids).last_hidden_state[0].mean(dim=0).numpy()
        want.append(v / np.linalg.norm(v))
    np.testing.assert_allclose(enc.encode_tokenized(tokenized), np.stack(want), atol=1e-5)
    empty = enc.tokenize_docs([])
    assert len(empty) == empty.total == 0 and enc.encode_tokenized(empty).shape == (0, 32)


def test_training_path_has_grad_and_same_values(tiny_mean: Path) -> None:
    enc = DenseEncoder(str(tiny_mean))
    emb = enc.embed(TEXTS[:2])
    assert emb.requires_grad
    np.testing.assert_allclose(emb.detach().numpy(), enc.encode_docs(TEXTS[:2]), atol=1e-5)


def test_bad_pooling_config_is_refused(tmp_path: Path) -> None:
    directory = make_tiny_model(tmp_path / "max")
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_max_tokens": True})
    )
    with pytest.raises(ModelError, match="mean or cls"):
        read_dense_config(directory)
