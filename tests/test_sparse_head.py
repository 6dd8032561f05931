"""The prefiltered float32 SPLADE head (``models.sparse_head``): the same weights as the
plain float32 head, on random heads built to stress the bound and on real splade-tiny."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from twofold.models.sparse import MLMSparseEncoder, activation
from twofold.models.sparse_head import PrefilteredHead

QUERIES = [
    "0-dimensional biomaterials show inductive properties.",
    "Vitamin D deficiency is associated with increased risk of multiple sclerosis.",
    "a",
    "The density of cytokine receptor bearing cells affects the distribution of "
    "signalling molecules in lymph nodes " * 12,  # longer than token_budget 64 below
]


def _exact(flat: torch.Tensor, lengths: list[int], w: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """log1p(relu(max_t x_t . w_v + b_v)) per text, in float64: the reference."""
    out, start = [], 0
    for n in lengths:
        x = flat[start : start + n].double()
        start += n
        logits = (x @ w.double().t()).amax(0) + b.double() if n else torch.full_like(b, -1.0)
        out.append(torch.log1p(torch.relu(logits)).numpy())
    return np.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_prefilter_keeps_every_positive_weight(seed: int) -> None:
    # biases just below zero, so that many logits sit near the cut, where the bfloat16
    # pass alone would misjudge them: the bound must still catch every positive one
    gen = torch.Generator().manual_seed(seed)
    n_vocab, hidden = 9000, 32  # more than one tile of the bfloat16 pass (8192 columns)
    w = torch.randn(n_vocab, hidden, generator=gen)
    b = -6.0 - torch.rand(n_vocab, generator=gen) * 8.0
    lengths = [5, 0, 1, 11, 3]
    flat = torch.randn(sum(lengths), hidden, generator=gen) * 0.7
    head = PrefilteredHead(w, b, token_budget=4)  # 11 rows: three slices, a running max
    with torch.inference_mode():
        got = activation(head.segment_max(flat, lengths) + b).numpy()
    want = _exact(flat, lengths, w, b)
    assert ((got > 0) == (want > 0)).all()
    assert 0 < int((want > 0).sum()) < want.size // 4  # sparse, and not trivially empty
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert (got[1] == 0).all()  # an empty text has no weights


def test_the_bfloat16_copy_follows_an_in_place_update() -> None:
    # a trainer steps the decoder in place; the encoder must not serve stale weights
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(300, 8, generator=gen), torch.zeros(300)
    flat = torch.randn(4, 8, generator=gen)
    head = PrefilteredHead(w, b)
    with torch.inference_mode():
        before = activation(head.segment_max(flat, [4]) + b).numpy()
    with torch.no_grad():
        w.mul_(-1.0)
    with torch.inference_mode():
        after = activation(head.segment_max(flat, [4]) + b).numpy()
    np.testing.assert_allclose(after, _exact(flat, [4], w, b), rtol=1e-5, atol=1e-5)
    assert not np.allclose(before, after)


@pytest.fixture(scope="module")
def encoders() -> tuple[MLMSparseEncoder, MLMSparseEncoder]:
    plain = MLMSparseEncoder("splade-tiny", query_max_length=64, token_budget=64, prefilter=False)
    fast = MLMSparseEncoder("splade-tiny", query_max_length=64, token_budget=64, prefilter=True)
    return plain, fast


def test_splade_tiny_weights_are_the_float32_ones(encoders) -> None:  # type: ignore[no-untyped-def]
    plain, fast = encoders
    assert plain._prefiltered is None and fast._prefiltered is not None
    want, got = plain.encode_queries(QUERIES), fast.encode_queries(QUERIES)
    assert got.nnz == want.nnz and (got.indices == want.indices).all()
    np.testing.assert_allclose(got.data, want.data, rtol=1e-5, atol=1e-6)
    docs = fast.encode_docs(QUERIES, batch_size=2)
    np.testing.assert_allclose(docs.toarray(), plain.encode_docs(QUERIES).toarray(), atol=1e-5)


def test_one_query_is_the_batch_row_from_several_threads(encoders) -> None:  # type: ignore[no-untyped-def]
    _, fast = encoders
    batch = fast.encode_queries(QUERIES)
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(fast.encode_query, QUERIES * 4))
    for r, (ids, weights) in enumerate(rows):
        want = batch[r % len(QUERIES)]
        assert ids.dtype == np.int64 and weights.dtype == np.float32
        np.testing.assert_array_equal(ids, want.indices)
        # a padded batch and one unpadded text differ in the last float bits
        # (``traced.TOLERANCE``)
        np.testing.assert_allclose(weights, want.data, rtol=1e-4, atol=1e-5)
