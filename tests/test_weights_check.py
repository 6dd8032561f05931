"""The weights check can fail: a manifest records the sha256 of the weights file that was
read (not the registry's expected digest), and a build resumed after its model was
retrained never mixes shards or sub-indexes of the old weights with the new ones."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from tests.test_dense_model import make_tiny_model as make_dense_model
from tests.test_sparse_unit import VOCAB, _dense
from tests.test_sparse_unit import make_tiny_model as make_mlm
from twofold.indexing.build import build_collection, partial_dir
from twofold.indexing.buildctx import BuildOptions, DenseOptions, SparseOptions
from twofold.indexing.collection import Collection
from twofold.models.dense import DenseEncoder
from twofold.models.registry import MODELS, model_fingerprint, sha256_file
from twofold.models.sparse import MLMSparseEncoder


def retrain(model: Path, seed: int = 1) -> None:
    """Other weights under the same directory (what a training run that saves over its
    output does): a 1-layer BERT MLM of the same shape from another seed."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig.from_pretrained(model)
    BertForMaskedLM(config).eval().save_pretrained(model)


def options(model: Path, retrievers: tuple[str, ...], **sparse: Any) -> BuildOptions:
    return BuildOptions(
        retrievers=retrievers,
        sparse=SparseOptions(model=str(model), **sparse),
        splade=SparseOptions(model=str(model), **sparse),
        dense=DenseOptions(model=str(model.parent / "dense")),
        max_length=32,
        batch_size=2,
        device="cpu",
        progress=False,
    )


def test_a_registry_model_is_fingerprinted_by_the_file_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = MODELS.get("splade-tiny")
    cached = spec.path()  # the real cache: copied, never changed
    monkeypatch.setenv("TWOFOLD_HOME", str(tmp_path))
    shutil.copytree(cached, tmp_path / "models" / "splade-tiny")
    assert spec.path() == tmp_path / "models" / "splade-tiny"
    assert model_fingerprint("splade-tiny")["sha256"] == spec.weights_sha256()
    weights = spec.path() / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor: still a loadable file
    weights.write_bytes(bytes(data))
    changed = model_fingerprint("splade-tiny")
    assert changed == {"name": "splade-tiny", "sha256": sha256_file(weights)}
    assert changed["sha256"] != spec.weights_sha256()


def test_shards_of_old_weights_are_not_reused_after_a_retrain(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_mlm(tmp_path / "mlm", with_idf=False)
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
        build_collection(tiny_corpus, out, options(model, ("sparse",), shard_size=2))
    assert (partial_dir(out) / "sparse" / "shards" / "shard-00000.npz").is_file()
    monkeypatch.setattr(MLMSparseEncoder, "encode_ids", real)

    retrain(model)
    resumed = build_collection(tiny_corpus, out, options(model, ("sparse",), shard_size=2))
    fresh = build_collection(
        tiny_corpus, tmp_path / "fresh", options(model, ("sparse",), shard_size=2)
    )
    new_sha = sha256_file(model / "model.safetensors")
    assert resumed.sub_indexes["sparse"]["encoder"]["sha256"] == new_sha
    got, want = (
        _dense(Collection(out).index("sparse")),
        _dense(Collection(tmp_path / "fresh").index("sparse")),
    )
    assert got.shape == (5, len(VOCAB)) and np.array_equal(got, want)
    assert fresh.sub_indexes["sparse"]["postings"] == resumed.sub_indexes["sparse"]["postings"]


def test_a_finished_subindex_of_old_weights_is_built_again_on_resume(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_mlm(tmp_path / "mlm", with_idf=False)
    make_dense_model(tmp_path / "dense")

    def crash(self: DenseEncoder, texts: Any) -> np.ndarray:
        raise RuntimeError("simulated crash")

    real = DenseEncoder.encode_docs
    monkeypatch.setattr(DenseEncoder, "encode_docs", crash)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_collection(tiny_corpus, out, options(model, ("splade", "dense")))
    assert (partial_dir(out) / "splade" / ".complete.json").is_file()  # splade finished
    monkeypatch.setattr(DenseEncoder, "encode_docs", real)

    retrain(model)
    resumed = build_collection(tiny_corpus, out, options(model, ("splade", "dense")))
    build_collection(tiny_corpus, tmp_path / "fresh", options(model, ("splade", "dense")))
    assert resumed.sub_indexes["splade"]["encoder"]["sha256"] == sha256_file(
        model / "model.safetensors"
    )
    got = _dense(Collection(out).index("splade"))
    assert np.array_equal(got, _dense(Collection(tmp_path / "fresh").index("splade")))
