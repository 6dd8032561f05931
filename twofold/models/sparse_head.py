"""The SPLADE head in float32, computed where it can matter: a bfloat16 pass bounds every
max-pooled logit, and float32 computes only those that can be positive.

Why: the MLM head (H x V, 128 x 30522 for splade-tiny) holds most of a SPLADE encoder's
FLOPs, and ``log(1 + relu(.))`` zeroes every logit that is not positive. Of 30,522
vocabulary entries, a SciFact query keeps 27-53 and a 256-token abstract 213-350. On a
CPU with native bfloat16 dot products (AVX512-BF16 or AMX) the bfloat16 product runs
about 3-4x faster than the float32 one, so one bfloat16 pass over the whole vocabulary
followed by a float32 product over the few hundred candidates costs about half the
float32 head. The result is the float32 head: the bound below is rigorous, so no entry
that float32 makes positive is skipped, and the candidates are computed in float32.

The bound. For a vocabulary row ``w`` and a token vector ``x``, the bfloat16 product
rounds each input (relative error ``u = 2**-8``), accumulates in float32 (oneDNN's
bfloat16 kernels do; its error is ``H * 2**-24``, negligible at H = 128) and rounds the
result once more, so ``|w.x - approx| <= (3u + 3u**2) * sum_i |w_i x_i|
<= SLACK * ||w|| * ||x||`` (Cauchy-Schwarz), with ``SLACK = 2**-6 > 3u + 3u**2``.
An entry ``v`` is a candidate when ``max_t approx[v, t] + SLACK * ||w_v|| * max_t ||x_t||
+ b_v > 0``; every other entry's max-pooled logit plus bias is <= 0 and its weight 0.
"""

from __future__ import annotations

import math
import threading

import torch

SLACK = 2.0**-6  # > 3 * 2**-8 + 3 * 2**-16: bfloat16 input and output rounding, see above
TILE = 8192  # vocabulary columns per bfloat16 product, split into tiles of equal width


class PrefilteredHead:
    """``segment_max(flat, lengths)`` -> (n_texts, V) float32: per text, the max over its
    rows of ``flat @ weight.T`` where ``that + bias`` can be positive, ``-inf`` elsewhere
    (so ``log1p(relu(max + bias))`` is the float32 head's weight everywhere).

    ``weight`` (V, H) and ``bias`` (V,) are the decoder's own float32 tensors, not copies:
    the bfloat16 copy and the row norms are remade when the weight changes in place
    (a training step), read from its version counter. ``token_budget``: rows of one
    text per product (a longer text is split with a running max). Thread-safe."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, token_budget: int = 512) -> None:
        self.weight = weight
        self.bias = bias
        self.token_budget = token_budget
        n_vocab = int(weight.shape[0])
        width = math.ceil(n_vocab / math.ceil(n_vocab / TILE))  # equal tiles: one kernel shape
        self.tiles = [(v, min(v + width, n_vocab)) for v in range(0, n_vocab, width)]
        self._lock = threading.Lock()
        self._state: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _copies(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(bfloat16 weight transposed (H, V), float32 row norms (V,)), current."""
        version = self.weight._version
        state = self._state
        if state is None or state[0] != version:
            with self._lock:
                state = self._state
                if state is None or state[0] != version:
                    w = self.weight.detach()
                    state = (version, w.to(torch.bfloat16).t().contiguous(), w.norm(dim=1))
                    self._state = state
        return state[1], state[2]

    def segment_max(self, flat: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        wt, norms = self._copies()
        n_vocab = int(self.weight.shape[0])
        out = torch.full((len(lengths), n_vocab), -math.inf, dtype=torch.float32)
        start = 0
        for t, n in enumerate(lengths):
            x = flat[start : start + n].float()
            start += n
            if n == 0:
                continue
            approx = self._approx_max(x.to(torch.bfloat16), wt)
            reach = SLACK * float(x.norm(dim=1).max())
            cand = torch.nonzero(approx + reach * norms + self.bias > 0).squeeze(1)
            if len(cand):
                rows = self.weight[cand]
                exact = torch.mm(rows, x[: self.token_budget].t()).amax(1)
                for r in range(self.token_budget, n, self.token_budget):
                    part = torch.mm(rows, x[r : r + self.token_budget].t()).amax(1)
                    exact = torch.maximum(exact, part)
                out[t, cand] = exact
        return out

    def _approx_max(self, xb: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
        """(V,) float32: the bfloat16 max over the rows of ``xb`` of ``xb @ wt``."""
        approx = torch.empty(wt.shape[1], dtype=torch.bfloat16)
        for r in range(0, xb.shape[0], self.token_budget):
            rows = xb[r : r + self.token_budget]
            for lo, hi in self.tiles:
                tile = torch.mm(rows, wt[:, lo:hi]).amax(0)
                dest = approx[lo:hi]
                if r == 0:
                    dest.copy_(tile)
                else:
                    torch.maximum(dest, tile, out=dest)
        return approx.float()
