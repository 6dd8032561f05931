"""The traced one-query forward (``twofold.models.traced``) against the eager module.

Real weights (minilm-l6, splade-tiny): the trace must give the eager numbers on every
path it serves, leave padded batches to the eager module, follow in-place weight
changes, stay right from several threads at once, and fall back to eager when a model
cannot be traced faithfully. The first ``EAGER_CALLS`` unpadded calls are eager.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from twofold.models.traced import EAGER_CALLS, TracedForward

QUERIES = [
    "cancer",
    "vitamin D deficiency increases the risk of multiple sclerosis",
    "The risk of cancer is lower in people who eat more fruit and vegetables every day.",
    "0-dimensional biomaterials show inductive properties.",
]


@pytest.fixture(scope="module")
def dense_pair():  # type: ignore[no-untyped-def]
    from twofold.models.dense import DenseEncoder

    return DenseEncoder("minilm-l6"), DenseEncoder("minilm-l6", traced=False)


@pytest.fixture(scope="module")
def splade_pair():  # type: ignore[no-untyped-def]
    from twofold.models.sparse import MLMSparseEncoder

    return (
        MLMSparseEncoder("splade-tiny", query_max_length=64),
        MLMSparseEncoder("splade-tiny", query_max_length=64, traced=False),
    )


@pytest.mark.slow
def test_dense_single_queries_are_traced_and_equal_eager(dense_pair) -> None:  # type: ignore[no-untyped-def]
    traced, eager = dense_pair
    for q in QUERIES * 2:  # lengths 3 to 22 tokens, none the trace's own 8; eager, then traced
        np.testing.assert_allclose(
            traced.encode_queries([q]), eager.encode_queries([q]), rtol=0, atol=1e-6
        )
    assert traced._forward.active and not eager._forward.active


@pytest.mark.slow
def test_batches_of_one_length_through_the_trace_equal_eager(dense_pair, splade_pair) -> None:  # type: ignore[no-untyped-def]
    """Documents truncated to max_length form such batches at build time."""
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for encoder in (dense_pair[0], splade_pair[0]):
            forward = encoder._forward
            for _ in range(EAGER_CALLS + 1):
                encoder.encode_queries(["take the trace"])
            assert forward.active
            ids = torch.randint(1000, 20000, (4, 64), generator=gen)
            mask = torch.ones_like(ids)
            torch.testing.assert_close(
                forward.hidden(ids, mask), forward.eager(ids, mask), rtol=0, atol=1e-5
            )


@pytest.mark.slow
def test_dense_padded_batch_goes_eager_and_matches_single_queries(dense_pair) -> None:  # type: ignore[no-untyped-def]
    traced, _ = dense_pair
    batch = traced.encode_queries(QUERIES)  # one padded batch: the eager path
    singles = np.concatenate([traced.encode_queries([q]) for q in QUERIES])
    np.testing.assert_allclose(batch, singles, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_splade_query_traced_equals_eager(splade_pair) -> None:  # type: ignore[no-untyped-def]
    traced, eager = splade_pair
    for q in QUERIES * 2:  # the first EAGER_CALLS eager, the rest traced
        ids_t, w_t = traced.encode_query(q)
        ids_e, w_e = eager.encode_query(q)
        np.testing.assert_array_equal(ids_t, ids_e)
        np.testing.assert_allclose(w_t, w_e, rtol=0, atol=1e-6)
    assert traced._forward is not None and traced._forward.active


@pytest.mark.slow
def test_traced_forward_from_threads_equals_serial(dense_pair) -> None:  # type: ignore[no-untyped-def]
    traced, _ = dense_pair
    serial = [traced.encode_queries([q]) for q in QUERIES * 4]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda q: traced.encode_queries([q]), QUERIES * 4))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


class _Toy(torch.nn.Module):
    """A tiny encoder with a configurable Python branch on the input."""

    class _Out:
        def __init__(self, h: torch.Tensor) -> None:
            self.last_hidden_state = h

    def __init__(self, branchy: bool) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 4)
        self.branchy = branchy

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.emb

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _Out:
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        if self.branchy and input_ids.shape[1] > 8:  # baked into a trace taken at length 8
            h = h * 2
        return self._Out(h)


def test_first_calls_are_eager_then_the_trace_serves() -> None:
    forward = TracedForward(_Toy(branchy=False).eval())
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        for _ in range(EAGER_CALLS):
            forward.hidden(ids, torch.ones_like(ids))
            assert not forward.active  # a one-shot command never pays for the trace
        forward.hidden(ids, torch.ones_like(ids))
    assert forward.active


def test_trace_follows_in_place_weight_changes() -> None:
    toy = _Toy(branchy=False).eval()
    forward = TracedForward(toy)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        for _ in range(EAGER_CALLS + 1):
            forward.hidden(ids, torch.ones_like(ids))
        assert forward.active
    with torch.no_grad():
        toy.emb.weight.mul_(3.0)  # a trainer's step, after the trace was taken
    with torch.inference_mode():
        got = forward.hidden(ids, torch.ones_like(ids))
        torch.testing.assert_close(got, forward.eager(ids, torch.ones_like(ids)), rtol=0, atol=0)


def test_trace_not_used_for_padding_grad_or_training() -> None:
    toy = _Toy(branchy=False).eval()
    forward = TracedForward(toy)
    ids = torch.tensor([[1, 2, 3, 0]])
    for _ in range(EAGER_CALLS + 1):
        with torch.inference_mode():
            forward.hidden(ids, torch.tensor([[1, 1, 1, 0]]))  # padded
        forward.hidden(ids, torch.ones_like(ids))  # grad mode: the training path
    toy.train()
    with torch.inference_mode():
        for _ in range(EAGER_CALLS + 1):
            forward.hidden(ids, torch.ones_like(ids))
    assert not forward.active


def test_unfaithful_trace_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    toy = _Toy(branchy=True).eval()
    forward = TracedForward(toy)
    ids = torch.arange(1, 20).unsqueeze(0)  # length 19: the branch the trace did not take
    with caplog.at_level(logging.WARNING, "twofold.models.traced"), torch.inference_mode():
        for _ in range(EAGER_CALLS + 2):
            got = forward.hidden(ids, torch.ones_like(ids))
            torch.testing.assert_close(got, toy(ids, torch.ones_like(ids)).last_hidden_state)
    assert not forward.active and not forward.enabled
    assert "differs from eager" in caplog.text
