"""Encoder precision (``twofold.models.device.resolve_precision``, ``DenseEncoder``'s
``precision``): what ``auto`` picks, the override, and bfloat16 minilm-l6 against
float32 on real queries and documents.

bfloat16 runs on any CPU (without AMX it is only slower), so these run everywhere; the
speed is measured in ``bench/bench_precision.py``, not asserted here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from twofold.core.errors import InputError, ModelError
from twofold.indexing.buildctx import DenseOptions
from twofold.models import device
from twofold.models.device import resolve_precision

QUERIES = [
    "cancer",
    "vitamin D deficiency increases the risk of multiple sclerosis",
    "0-dimensional biomaterials show inductive properties.",
]
DOCS = [
    "Vitamin D status was measured in 120 patients with relapsing multiple sclerosis.",
    "Swept wings delay the onset of compressibility drag at high subsonic speeds.",
    "Fruit and vegetable intake was inversely associated with the risk of colon cancer "
    "in a cohort of 40,000 women followed for ten years.",
]
# bfloat16 keeps 8 bits of mantissa: unit vectors of 384 dims stay this close (measured
# on SciFact: the smallest cosine over 60 queries was 0.9999)
MIN_COSINE = 0.999


@pytest.fixture
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Point the AMX check at a file written by the test, with a fresh cache."""

    def write(flags: str) -> None:
        file = tmp_path / "cpuinfo"
        file.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
        monkeypatch.setattr(device, "CPUINFO", file)
        device.cpu_flags.cache_clear()

    monkeypatch.delenv("TWOFOLD_PRECISION", raising=False)
    yield write
    device.cpu_flags.cache_clear()


def test_auto_is_bf16_where_the_cpu_multiplies_it_natively(cpuinfo) -> None:  # type: ignore[no-untyped-def]
    cpuinfo("fpu sse2 avx2 avx512f")  # no bfloat16 instructions: torch would emulate them
    assert not device.cpu_has_bf16_dot()
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu", "sparse") == "fp32"
    cpuinfo("fpu sse2 avx2 avx512f avx512_bf16")  # bf16 dot products, no AMX tiles
    assert device.cpu_has_bf16_dot() and not device.cpu_has_amx()
    assert resolve_precision("auto", "cpu") == "bf16"
    # a SPLADE head stays float32 there: its prefiltered head is exact and the faster one
    assert resolve_precision("auto", "cpu", "sparse") == "fp32"
    cpuinfo("fpu sse2 avx512f amx_bf16 amx_tile amx_int8")
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu", "sparse") == "bf16"
    assert device.cpu_has_bf16_dot()
    assert resolve_precision("fp32", "cpu") == "fp32"  # asked for: never changed
    assert resolve_precision("bf16", "cpu", "sparse") == "bf16"


def test_an_unreadable_cpuinfo_means_no_amx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "missing")
    device.cpu_flags.cache_clear()
    try:
        assert device.cpu_has_amx() is False
    finally:
        device.cpu_flags.cache_clear()


def test_the_environment_overrides_auto_only(cpuinfo, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cpuinfo("amx_bf16")
    monkeypatch.setenv("TWOFOLD_PRECISION", "fp32")
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setenv("TWOFOLD_PRECISION", "half")
    with pytest.raises(InputError, match="TWOFOLD_PRECISION must be fp32 or bf16"):
        resolve_precision("auto", "cpu")


def test_unknown_precisions_are_refused() -> None:
    with pytest.raises(InputError, match="--precision must be auto, fp32 or bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(InputError, match="--precision"):
        DenseOptions(precision="int8")


@pytest.fixture(scope="module")
def encoders():  # type: ignore[no-untyped-def]
    from twofold.models.dense import DenseEncoder

    return DenseEncoder("minilm-l6"), DenseEncoder("minilm-l6", precision="bf16")


def test_bf16_minilm_gives_the_fp32_vectors_within_its_precision(encoders) -> None:  # type: ignore[no-untyped-def]
    fp32, bf16 = encoders
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    for encode in ("encode_queries", "encode_docs"):
        want = getattr(fp32, encode)(QUERIES + DOCS)
        got = getattr(bf16, encode)(QUERIES + DOCS)
        assert got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert np.min(np.sum(want * got, axis=1)) >= MIN_COSINE
    # the same ranking of documents for each query
    q, d = bf16.encode_queries(QUERIES), bf16.encode_docs(DOCS)
    q32, d32 = fp32.encode_queries(QUERIES), fp32.encode_docs(DOCS)
    assert (np.argsort(-(q @ d.T), axis=1) == np.argsort(-(q32 @ d32.T), axis=1)).all()


def test_bf16_queries_from_threads_equal_the_serial_ones(encoders) -> None:  # type: ignore[no-untyped-def]
    _, bf16 = encoders
    for q in QUERIES:  # past the eager calls: the trace serves from here on
        bf16.encode_queries([q])
    serial = [bf16.encode_queries([q]) for q in QUERIES * 4]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda q: bf16.encode_queries([q]), QUERIES * 4))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    assert bf16._forward.active  # the trace of the bfloat16 module passed its check


def test_a_bf16_encoder_refuses_to_train(encoders) -> None:  # type: ignore[no-untyped-def]
    fp32, bf16 = encoders
    assert tuple(fp32.embed(["a query"]).shape) == (1, fp32.dim)
    with pytest.raises(ModelError, match="precision='fp32'"):
        bf16.embed(["a query"])


@pytest.fixture(scope="module")
def splade_encoders():  # type: ignore[no-untyped-def]
    from twofold.models.sparse import MLMSparseEncoder

    return MLMSparseEncoder("splade-tiny"), MLMSparseEncoder("splade-tiny", precision="bf16")


def _dense_row(ids: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    row = np.zeros(size, dtype=np.float64)
    row[ids] = weights
    return row


def test_bf16_splade_queries_keep_their_terms_and_weights(splade_encoders) -> None:  # type: ignore[no-untyped-def]
    """The splade query side in bfloat16 (the ``auto`` choice on AMX): the same weight
    vector within bfloat16's precision (measured on SciFact's 300 test queries: cosine
    >= 0.9998), float32 weights out, and the heaviest term unchanged."""
    fp32, bf16 = splade_encoders
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    for q in QUERIES:
        (i32, w32), (i16, w16) = fp32.encode_query(q), bf16.encode_query(q)
        assert w16.dtype == np.float32 and len(i16) > 0
        a, b = _dense_row(i32, w32, fp32.vocab_size), _dense_row(i16, w16, fp32.vocab_size)
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= MIN_COSINE
        assert i32[np.argmax(w32)] == i16[np.argmax(w16)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(bf16.encode_query, QUERIES * 4))
    for q, (ids, weights) in zip(QUERIES * 4, threaded, strict=True):
        want_ids, want_weights = bf16.encode_query(q)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(weights, want_weights)


def test_a_bf16_splade_encoder_refuses_to_train(splade_encoders) -> None:  # type: ignore[no-untyped-def]
    import torch

    _, bf16 = splade_encoders
    ids = torch.ones((1, 4), dtype=torch.long)
    with pytest.raises(ModelError, match="precision='fp32'"):
        bf16.forward(ids, torch.ones_like(ids))


def test_sparse_builds_record_their_precision_and_share_documents_only_alike(
    tmp_path: Path,
) -> None:
    """``--precision`` reaches the masked-LM document encoder of ``sparse`` and
    ``splade``: each records it, ``splade`` takes ``sparse``'s documents when both were
    encoded alike, and encodes its own when they were not; bfloat16 weights stay close
    to float32 ones (the same heaviest terms of a document)."""
    from tests.conftest import SAMPLE
    from twofold.indexing.build import build_collection
    from twofold.indexing.buildctx import BuildOptions, SparseOptions
    from twofold.indexing.collection import Collection

    def build(name: str, sparse: str, splade: str) -> dict[str, dict[str, object]]:
        options = BuildOptions(
            retrievers=("sparse", "splade"),
            max_docs=12,
            max_length=64,
            progress=False,
            sparse=SparseOptions(precision=sparse, engines=()),
            splade=SparseOptions(precision=splade, engines=()),
        )
        return build_collection(SAMPLE / "corpus.jsonl", tmp_path / name, options).sub_indexes

    alike = build("alike", "bf16", "bf16")
    assert alike["sparse"]["precision"] == alike["splade"]["precision"] == "bf16"
    assert str(alike["splade"].get("doc_side", "")).startswith("copied from the sparse")
    mixed = build("mixed", "fp32", "bf16")
    assert (mixed["sparse"]["precision"], mixed["splade"]["precision"]) == ("fp32", "bf16")
    assert "doc_side" not in mixed["splade"]
    # the same documents in both precisions: the heaviest term of each is unchanged
    fp32_docs = Collection(tmp_path / "mixed").index("sparse")
    bf16_docs = Collection(tmp_path / "alike").index("sparse")
    terms = np.arange(len(fp32_docs.vocab), dtype=np.int64)
    for ordinal in range(12):
        a, b = fp32_docs.doc_weights(ordinal, terms), bf16_docs.doc_weights(ordinal, terms)
        assert np.argmax(a) == np.argmax(b)
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.99
