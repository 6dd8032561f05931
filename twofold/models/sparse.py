"""Learned sparse encoders over a masked-language-model head (SPLADE family).

Document side (both methods), Formal et al. 2021 (SPLADE) and Geng et al. 2024
(arXiv 2411.04403, the OpenSearch doc-only models)::

    w_d[j] = log(1 + relu(max_i mask_i * logits[i, j]))      j over the vocabulary V

with the tokenizer's special tokens zeroed and optional pruning (top-k, max-ratio).

Query side:

* inference-free (``IdfQueryEncoder``): ``q[j] = 1[j in tokens(q)] * relu(idf[j])``, a
  repeated token counted once, no model; ``idf`` from the model's ``idf.json``
  (OpenSearch layout: token -> idf) or from the collection
  (``idf_j = log(1 + (N - df_j + 0.5) / (df_j + 0.5))``);
* siamese SPLADE (``MLMSparseEncoder.encode_queries``): the document activation.

Serving paths run under ``torch.inference_mode`` and return ``scipy.sparse.csr_matrix``
of shape (n_texts, V), float32. The MLM head (hidden H x V, e.g. 128 x 30522) holds
most of the FLOPs, so the fast path computes logits only for non-padding positions, in
cache-sized (vocab tile x tokens of one text) products each reduced to its max at once:
no (B, L, V) or (tokens, V) tensor is ever materialized.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from twofold.core.errors import InputError, ModelError
from twofold.models.registry import resolve
from twofold.models.sparse_head import PrefilteredHead
from twofold.models.traced import TracedForward

log = logging.getLogger(__name__)

IDF_FILE = "idf.json"


@dataclass(frozen=True)
class Pruning:
    """Document-vector pruning. ``top_k``: keep the k largest weights of each document;
    ``max_ratio``: drop weights below ``max_ratio * max(w_d)`` (0 < max_ratio < 1)."""

    top_k: int | None = None
    max_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"pruning top_k must be >= 1, not {self.top_k}")
        if self.max_ratio is not None and not 0.0 <= self.max_ratio < 1.0:
            raise InputError(f"pruning max_ratio must be in [0, 1), not {self.max_ratio}")

    @property
    def active(self) -> bool:
        return self.top_k is not None or bool(self.max_ratio)

    def to_json(self) -> dict[str, Any]:
        return {"top_k": self.top_k, "max_ratio": self.max_ratio}


def activation(max_logits: torch.Tensor) -> torch.Tensor:
    """``log(1 + relu(x))`` elementwise: the SPLADE saturation of a max-pooled logit."""
    return torch.log1p(torch.relu(max_logits))


def prune(matrix: sp.csr_matrix, pruning: Pruning) -> sp.csr_matrix:
    """Apply ``pruning`` row by row to a (n, V) CSR matrix; returns a new CSR matrix."""
    if not pruning.active:
        return matrix
    m = matrix.tocsr()
    indptr, indices, data = m.indptr, m.indices, m.data
    keep = np.ones(len(data), dtype=bool)
    for r in range(m.shape[0]):
        s, e = indptr[r], indptr[r + 1]
        if e == s:
            continue
        row = data[s:e]
        k = keep[s:e]
        if pruning.max_ratio:
            k &= row >= pruning.max_ratio * row.max()
        if pruning.top_k is not None and int(k.sum()) > pruning.top_k:
            # the k largest kept weights; ties broken by lower term id (stable order)
            cand = np.flatnonzero(k)
            order = np.argsort(-row[cand], kind="stable")[: pruning.top_k]
            k[:] = False
            k[cand[order]] = True
    out = sp.csr_matrix(
        (data[keep], indices[keep], np.concatenate([[0], np.cumsum(_row_counts(indptr, keep))])),
        shape=m.shape,
    )
    return out


def _row_counts(indptr: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Kept entries per row of a CSR matrix."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return np.bincount(rows[keep], minlength=len(indptr) - 1)


def idf_from_df(df: np.ndarray, n_docs: int) -> np.ndarray:
    """BM25's idf per term: ``log(1 + (N - df + 0.5) / (df + 0.5))``, float32, shape (V,)."""
    d = df.astype(np.float64)
    return np.log1p((n_docs - d + 0.5) / (d + 0.5)).astype(np.float32)


def load_tokenizer(model: str | Path) -> Any:
    """The tokenizer of a registry name or a model directory (offline)."""
    from transformers import AutoTokenizer

    where = resolve(str(model)) if not isinstance(model, Path) else model
    try:
        return AutoTokenizer.from_pretrained(str(where))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a tokenizer from {where}: {exc}") from None


def special_ids(tokenizer: Any) -> list[int]:
    return sorted({int(i) for i in tokenizer.all_special_ids})


def vocab_list(tokenizer: Any) -> list[str]:
    """Token strings by id (length V = len(tokenizer))."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [str(t) for t in tokens]


def load_idf_json(path: Path, tokenizer: Any) -> np.ndarray:
    """An OpenSearch ``idf.json`` (token -> idf) as a (V,) float32 vector; a token not in
    the file gets 0 (as OpenSearch's reference code does)."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not a readable idf.json: {exc}") from None
    if not isinstance(table, dict):
        raise ModelError(f"{path}: expected a JSON object token -> idf")
    vocab = tokenizer.get_vocab()
    idf = np.zeros(max(len(tokenizer), max(vocab.values(), default=-1) + 1), dtype=np.float32)
    unknown = 0
    for token, value in table.items():
        j = vocab.get(token)
        if j is None:
            unknown += 1
            continue
        idf[j] = float(value)
    if unknown:
        log.warning("%s: %d tokens are not in the tokenizer's vocabulary", path, unknown)
    return idf


def model_idf(model: str | Path, tokenizer: Any) -> np.ndarray | None:
    """The model directory's ``idf.json`` as a vector, or ``None`` when it ships none."""
    where = resolve(str(model))
    if isinstance(where, Path) and (where / IDF_FILE).is_file():
        return load_idf_json(where / IDF_FILE, tokenizer)
    return None


class IdfQueryEncoder:
    """Inference-free query side: tokenizer ids weighted by ``relu(idf)``, no model.

    ``idf``: (V,) float32. Special tokens and repeated tokens contribute once or never.
    ``min_idf``: query-side pruning, ``q[j] = 0`` where ``idf[j] < min_idf`` (stopword-like
    tokens whose long posting lists cost a term-at-a-time engine most); 0 keeps the
    exact encoder.
    """

    def __init__(self, tokenizer: Any, idf: np.ndarray, min_idf: float = 0.0) -> None:
        if min_idf < 0:
            raise InputError(f"query min_idf must be >= 0, not {min_idf}")
        self.tokenizer = tokenizer
        self.min_idf = float(min_idf)
        self.idf = np.maximum(np.asarray(idf, dtype=np.float32), 0.0)
        self.idf[special_ids(tokenizer)] = 0.0
        self.idf[self.idf < self.min_idf] = 0.0
        self.vocab_size = len(self.idf)
        # the Rust tokenizer directly: the same ids as tokenizer(...) without the
        # per-call Python overhead of a BatchEncoding (half a millisecond a query)
        self._backend = getattr(tokenizer, "backend_tokenizer", None)

    def _ids(self, text: str) -> list[int]:
        if self._backend is not None:
            return list(self._backend.encode(text, add_special_tokens=False).ids)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_query(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text -> (term ids ascending int64, weights float32), nonzero weights only."""
        uniq = np.unique(np.asarray(self._ids(text), dtype=np.int64))
        w = self.idf[uniq]
        nz = w > 0
        return uniq[nz], w[nz]

    def encode_queries(self, texts: Sequence[str]) -> sp.csr_matrix:
        """(n, V) CSR float32: ``q[j] = relu(idf[j])`` for each distinct token j of a text."""
        indptr = [0]
        indices: list[np.ndarray] = []
        data: list[np.ndarray] = []
        for text in texts:
            ids, w = self.encode_query(text)
            indices.append(ids)
            data.append(w)
            indptr.append(indptr[-1] + len(ids))
        return sp.csr_matrix(
            (
                np.concatenate([np.zeros(0, np.float32), *data]),
                np.concatenate([np.zeros(0, np.int64), *indices]).astype(np.int32),
                indptr,
            ),
            shape=(len(indptr) - 1, self.vocab_size),
        )


class MLMSparseEncoder:
    """SPLADE-style encoder over any Hugging Face ``*ForMaskedLM``.

    ``max_length``: tokens per document (truncation); ``query_max_length`` for queries.
    ``token_budget``: tokens of one text per logits tile on the fast path (a longer
    text is split); ``vocab_tile``: vocabulary rows per logits tile.
    Torch's intra-op thread count is process-wide: it is set once, at start, by
    ``twofold.models.threads.set_torch_threads`` (the service does), never around a
    call (switching it per query raced between concurrent requests).
    ``precision``: ``fp32`` (the default: what training needs), ``bf16`` or ``auto``
    (``models.device.resolve_precision``; builds and the served query side pass what
    ``--precision`` / ``auto`` resolve to). bfloat16 needs a BERT-style head (the tiled
    fast path; otherwise the encoder stays float32), holds the weights in bfloat16 and is
    for inference only: ``forward`` refuses.
    ``prefilter``: serve the float32 head through ``sparse_head.PrefilteredHead`` (a
    bfloat16 bound, then float32 where a weight can be nonzero: the same weights, about
    half the time); ``None`` turns it on for the CPU when it has native bfloat16 dot
    products (``device.cpu_has_bf16_dot``), where bfloat16 products are the fast ones.
    """

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        max_length: int = 256,
        query_max_length: int = 256,
        pruning: Pruning | None = None,
        token_budget: int = 512,
        vocab_tile: int = 4096,
        traced: bool = True,
        precision: str = "fp32",
        prefilter: bool | None = None,
    ) -> None:
        from transformers import AutoModelForMaskedLM

        from twofold.models.device import cpu_has_bf16_dot, resolve_precision

        self.name = str(model)
        where = resolve(str(model))
        self.tokenizer = load_tokenizer(where if isinstance(where, Path) else Path(where))
        try:
            self.model = AutoModelForMaskedLM.from_pretrained(str(where)).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load a masked-LM from {where}: {exc}") from None
        self.device = device
        self.max_length = max_length
        self.query_max_length = query_max_length
        self.pruning = pruning or Pruning()
        self.token_budget = token_budget
        self.vocab_tile = vocab_tile
        self.special = special_ids(self.tokenizer)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._head = self._split_head()
        self.precision = resolve_precision(precision, device, "sparse") if self._head else "fp32"
        if self.precision == "bf16":
            self.model.to(torch.bfloat16)
            self._head = self._split_head()
        # tokens per logits tile rounded up to this (``_pad_rows``): float32 products of 32
        # rows run faster than of 20 on the dev machine, bfloat16 ones slower (one query:
        # 4.6 ms unpadded in bfloat16, 5.3 padded, 6.0 float32 padded)
        self.row_multiple = 16 if self.precision == "fp32" else 1
        self._forward = TracedForward(self._head[0], traced) if self._head else None
        if prefilter is None:
            prefilter = device == "cpu" and cpu_has_bf16_dot()
        self._prefiltered = (
            PrefilteredHead(self._head[2], self._head[3], token_budget)
            if prefilter and self._head is not None and self.precision == "fp32"
            else None
        )

    def _split_head(self) -> tuple[Any, Any, torch.Tensor, torch.Tensor] | None:
        """(encoder, transform, W (V, H), bias (V,)) for BERT-style heads, else None."""
        cls = getattr(self.model, "cls", None)
        pred = getattr(cls, "predictions", None)
        transform = getattr(pred, "transform", None)
        decoder = getattr(pred, "decoder", None)
        if transform is None or decoder is None:
            return None
        bias = decoder.bias if decoder.bias is not None else getattr(pred, "bias", None)
        if bias is None:
            bias = torch.zeros(decoder.weight.shape[0], dtype=decoder.weight.dtype)
        weight = decoder.weight.detach().contiguous()
        return self.model.base_model, transform, weight, bias.detach()

    # ------------------------------------------------------------------ training path
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, V) weights, with grad (materializes (B, L, V))."""
        if self.precision != "fp32":
            raise ModelError(
                f"this {self.name} encoder holds {self.precision} weights for inference; "
                "train one made with precision='fp32'"
            )
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        masked = logits * attention_mask.unsqueeze(-1).to(logits.dtype)
        weights = activation(masked.amax(dim=1))
        zero = torch.ones(weights.shape[-1], device=weights.device)
        zero[self.special] = 0.0
        return weights * zero

    # ------------------------------------------------------------------- serving path
    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        out = self.tokenizer(list(texts), truncation=True, max_length=max_length)
        return [list(ids) for ids in out["input_ids"]]

    def encode_docs(self, texts: Sequence[str], batch_size: int = 32) -> sp.csr_matrix:
        """(n, V) CSR float32 document weights, pruned with ``self.pruning``."""
        ids = self.tokenize(texts, self.max_length)
        return prune(self.encode_ids(ids, batch_size), self.pruning)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32) -> sp.csr_matrix:
        """(n, V) CSR float32 query weights (siamese: the document activation, unpruned)."""
        ids = self.tokenize(texts, self.query_max_length)
        return self.encode_ids(ids, batch_size)

    def encode_query(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text -> (term ids ascending int64, weights float32), nonzero weights only:
        ``encode_queries`` of one text, without building a sparse matrix (the served path)."""
        ids = self.tokenize([text], self.query_max_length)
        with torch.inference_mode():
            row = self._encode_batch(list(ids))[0].float().cpu()
        nonzero = torch.nonzero(row).squeeze(1)
        return nonzero.numpy().astype(np.int64), row[nonzero].numpy()

    def encode_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 32) -> sp.csr_matrix:
        """Token id lists -> (n, V) CSR. Batches are formed over texts sorted by length
        (less padding); rows come back in input order."""
        if not ids:
            return sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
        order = np.argsort([len(x) for x in ids], kind="stable")
        parts: list[sp.csr_matrix] = []
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                weights = self._encode_batch([ids[i] for i in order[s : s + batch_size]])
                parts.append(sp.csr_matrix(weights.float().cpu().numpy()))
        stacked = sp.vstack(parts, format="csr", dtype=np.float32)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        out: sp.csr_matrix = stacked[inverse]
        out.sort_indices()
        return out

    def _encode_batch(self, ids: list[Sequence[int]]) -> torch.Tensor:
        """A batch of token id lists -> (B, V) weights."""
        longest = max(len(x) for x in ids)
        pad = int(self.tokenizer.pad_token_id or 0)
        input_ids = torch.full((len(ids), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for r, x in enumerate(ids):
            input_ids[r, : len(x)] = torch.as_tensor(list(x), dtype=torch.long)
            mask[r, : len(x)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        if self._head is None or self._forward is None:
            return self.forward(input_ids, mask)
        _, transform, weight, bias = self._head
        hidden = self._forward.hidden(input_ids, mask)
        lengths = [len(x) for x in ids]
        flat = transform(hidden[mask.bool()])  # (sum of lengths, H): no padding rows
        if self._prefiltered is not None:
            maxes = self._prefiltered.segment_max(flat, lengths)
        else:
            maxes = self._segment_max(flat, lengths, weight)
        weights = activation(maxes + bias)
        weights[:, self.special] = 0.0
        return weights

    def _segment_max(self, flat: torch.Tensor, lengths: list[int], w: torch.Tensor) -> torch.Tensor:
        """Per text, the max over its rows of ``flat @ w.T``: (n_texts, V).

        ``w`` is the decoder weight (V, H). The product is tiled: ``vocab_tile`` rows of
        ``w`` against at most ``token_budget`` tokens of one text, so each logits tile
        (e.g. 4096 x 256 floats, 4 MB) stays in cache and is reduced while hot; the full
        (tokens x V) logits, memory-bound at inner dimension H = 128, never exist. A
        text longer than ``token_budget`` is split into slices with a running max."""
        n_vocab = w.shape[0]
        out = torch.empty((len(lengths), n_vocab), device=flat.device, dtype=w.dtype)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        budget, tile = self.token_budget, self.vocab_tile
        for t in range(len(lengths)):
            start, stop = offsets[t], offsets[t + 1]
            for r in range(start, stop, budget):
                xt = _pad_rows(flat[r : min(r + budget, stop)], self.row_multiple).t()
                for v in range(0, n_vocab, tile):
                    dest = out[t, v : v + tile]
                    if r == start:
                        torch.amax(torch.mm(w[v : v + tile], xt), 1, out=dest)
                    else:
                        torch.maximum(dest, torch.mm(w[v : v + tile], xt).amax(1), out=dest)
        return out


def _pad_rows(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` (n, H) with its first row repeated until n is a multiple of ``multiple``.

    A repeated row leaves every max unchanged, and the matmul then sees a few distinct
    shapes only: the CPU backend prepares a kernel per new shape (about 0.1 s each),
    which with one shape per text length cost more than the products themselves."""
    extra = -x.shape[0] % multiple
    if extra == 0:
        return x
    return torch.cat([x, x[:1].expand(extra, -1)])


def mlm_flops_per_token(encoder: MLMSparseEncoder) -> float:
    """Approximate fp32 FLOPs per non-padding token of the fast path (matmuls only):
    transformer layers (QKV/out projections, FFN) plus the MLM head (H x V)."""
    cfg = encoder.model.config
    h = int(cfg.hidden_size)
    layers = int(getattr(cfg, "num_hidden_layers", 0))
    inter = int(getattr(cfg, "intermediate_size", 4 * h))
    per_layer = 2 * (4 * h * h + 2 * h * inter)
    head = 2 * (h * h + h * encoder.vocab_size)
    return float(layers * per_layer + head)


def describe(encoder: MLMSparseEncoder) -> str:
    cfg = encoder.model.config
    params = math.fsum(p.numel() for p in encoder.model.parameters())
    return (
        f"{encoder.name}: {type(encoder.model).__name__}, hidden {cfg.hidden_size}, "
        f"vocab {encoder.vocab_size}, {params:.0f} params"
    )
