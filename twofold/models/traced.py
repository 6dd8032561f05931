"""A TorchScript trace of an encoder's forward, for the one-query serving path.

Why: a query is one short, unpadded text. Eager PyTorch runs a 6-layer encoder on it as a
few hundred small ops, each dispatched from Python with the GIL held, so two encoders
called from two threads (``hybrid``'s ``dense`` and ``splade`` on the pipeline's pool)
take turns instead of running at once, and the dispatch is a large share of each call.
A traced graph runs in TorchScript's C++ interpreter, which does not hold the GIL. On
the 2-core dev machine, SciFact, one torch thread: ``dense`` p50 11.7 ms traced against
14.8 ms eager, ``hybrid`` 18.5 against 25.4 ms (``bench/bench_hybrid_parallel.py``, one
run, BENCHMARKS.md).

The trace is taken lazily, once, on the third unpadded call (``EAGER_CALLS`` run eager
first): tracing and checking minilm-l6 takes about 1 s, which a one-shot command such as
``twofold search`` should not pay; a service traces during its warm-up. It is taken from
a (1, 8) input of ones and used only where it is exact: inputs whose attention mask is
all ones (a single query, or texts of one length), on the CPU, in inference. Padded
batches go to the eager module, because a trace taken without padding may have dropped
the masking branch. After tracing, the graph is checked against the eager module on two
other shapes, one of them a batch; a trace that fails or disagrees is dropped with a
warning and the eager module serves from then on. The trace holds the module's own
parameters (no copy, nothing frozen), so its output follows the weights.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

import torch

log = logging.getLogger(__name__)

EAGER_CALLS = 2  # unpadded calls served eager before the trace is taken
# one trace at a time in the process: warnings.catch_warnings is not thread-safe, and two
# encoders first traced at once (hybrid's pool) would restore each other's filters
_TRACING = threading.Lock()
CHECK_SHAPES = ((1, 3), (2, 19))  # (texts, tokens): batches of one length use it too
TOLERANCE = 1e-4  # same kernels, same order: the check sees 0.0 on minilm-l6, splade-tiny


class _Hidden(torch.nn.Module):
    """``(input_ids, attention_mask) -> last_hidden_state``: a plain-tensor signature to
    trace (Hugging Face models return output objects)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        return out


class TracedForward:
    """``hidden(input_ids, attention_mask)`` -> (B, L, H) last hidden states of
    ``encoder``: traced for unpadded CPU inference, eager otherwise (see the module
    docstring). Safe to call from several threads at once."""

    def __init__(self, encoder: torch.nn.Module, enabled: bool = True) -> None:
        self.encoder = encoder
        self.enabled = enabled
        self._wrapper = _Hidden(encoder)  # what eager calls and what is traced
        self._traced: Any = None
        self._calls = 0  # unpadded calls so far (a race only moves when tracing starts)
        self._lock = threading.Lock()

    def eager(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self._wrapper(input_ids, attention_mask)
        return out

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self._usable(input_ids, attention_mask) and self._due():
            traced = self._trace()
            if traced is not None:
                out: torch.Tensor = traced(input_ids, attention_mask)
                return out
        return self.eager(input_ids, attention_mask)

    @property
    def active(self) -> bool:
        """Whether a checked trace is in use (from the third unpadded call on)."""
        return self._traced is not None

    def _usable(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bool:
        return (
            self.enabled
            and input_ids.device.type == "cpu"
            and not self.encoder.training
            and torch.is_inference_mode_enabled()
            and bool(attention_mask.all())
        )

    def _due(self) -> bool:
        if self._traced is not None:
            return True
        self._calls += 1
        return self._calls > EAGER_CALLS

    def _trace(self) -> Any:
        if self._traced is not None or not self.enabled:
            return self._traced
        with self._lock:
            if self._traced is None and self.enabled:
                self._traced = self._build()
                self.enabled = self._traced is not None
        return self._traced

    def _build(self) -> Any:
        name = type(self.encoder).__name__
        vocab = _vocab_size(self.encoder)
        example = torch.ones((1, 8), dtype=torch.long)
        try:
            with _TRACING, warnings.catch_warnings():  # TracerWarning: shape-dependent branches
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(
                    self._wrapper, (example, torch.ones_like(example)), check_trace=False
                )
            gen = torch.Generator().manual_seed(0)
            for shape in CHECK_SHAPES:
                ids = torch.randint(1, vocab, shape, generator=gen)
                mask = torch.ones_like(ids)
                diff = (traced(ids, mask) - self.eager(ids, mask)).abs().max().item()
                if not diff <= TOLERANCE:
                    log.warning("traced %s differs from eager by %.3g; serving eager", name, diff)
                    return None
        except Exception as exc:
            log.warning("cannot trace %s (%s); serving it eager", name, exc)
            return None
        log.info("serving %s through a TorchScript trace (unpadded inputs)", name)
        return traced


def _vocab_size(encoder: torch.nn.Module) -> int:
    """Token ids the check may draw: the input embedding's rows (2 when unknown: id 1)."""
    get = getattr(encoder, "get_input_embeddings", None)
    table = get() if callable(get) else None
    return max(int(getattr(table, "num_embeddings", 2)), 2)
