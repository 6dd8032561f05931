"""Dense bi-encoder: a Hugging Face encoder + pooling read from its directory, L2-normalized.

Loads any sentence-embedding model in the sentence-transformers on-disk layout
(``config.json``, tokenizer files, weights, ``modules.json`` -> ``1_Pooling/config.json``)
with plain ``transformers.AutoModel``; the sentence-transformers package is not used.

Embedding of a text ``t`` (tokens ``1..n`` with hidden states ``h_i`` of size ``dim``):

- ``mean``: ``e = sum_i m_i h_i / max(sum_i m_i, 1e-9)`` where ``m`` is the attention mask
- ``cls``: ``e = h_1`` (the ``[CLS]`` token)

then ``e / max(||e||_2, 1e-12)``, so inner product = cosine similarity.

Queries and documents may carry different prefixes (e5: ``"query: "`` / ``"passage: "``,
bge: an instruction on the query side only); they come from the arguments, else from
``config_sentence_transformers.json``'s ``prompts`` (keys ``query`` and ``document`` or
``passage``), else none.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import InputError, ModelError
from twofold.models.registry import model_fingerprint, resolve

log = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls")


@dataclass(frozen=True)
class DenseConfig:
    """What a directory says about how to turn hidden states into one vector per text."""

    pooling: str = "mean"
    max_length: int | None = None  # sentence_bert_config.json's max_seq_length
    query_prefix: str = ""
    doc_prefix: str = ""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path} is not a JSON object")
    return obj


def _pooling_dir(directory: Path) -> Path | None:
    modules = directory / "modules.json"
    if modules.is_file():
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelError(f"cannot read {modules}: {exc}") from None
        for entry in entries:
            if str(entry.get("type", "")).endswith("Pooling"):
                return directory / str(entry.get("path", ""))
    fallback = directory / "1_Pooling"
    return fallback if fallback.is_dir() else None


def read_dense_config(directory: Path) -> DenseConfig:
    """Pooling, max length and prompts from a sentence-transformers style directory.

    A directory without a pooling config gets mean pooling (logged): the choice of most
    sentence-embedding models. Max and mean-sqrt-len pooling are refused, not guessed.
    """
    pooling = "mean"
    pool_dir = _pooling_dir(directory)
    if pool_dir is not None and (pool_dir / "config.json").is_file():
        cfg = _read_json(pool_dir / "config.json")
        if cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif cfg.get("pooling_mode_mean_tokens"):
            pooling = "mean"
        elif "pooling_mode" in cfg and cfg["pooling_mode"] in POOLING_MODES:
            pooling = str(cfg["pooling_mode"])
        else:
            raise ModelError(
                f"{pool_dir / 'config.json'}: pooling other than mean or cls is not supported"
            )
    else:
        log.info("%s has no pooling config; using mean pooling", directory)
    max_length = None
    sbert = directory / "sentence_bert_config.json"
    if sbert.is_file():
        value = _read_json(sbert).get("max_seq_length")
        max_length = int(value) if value else None
    query_prefix = doc_prefix = ""
    st_cfg = directory / "config_sentence_transformers.json"
    if st_cfg.is_file():
        prompts = _read_json(st_cfg).get("prompts") or {}
        if isinstance(prompts, dict):
            query_prefix = str(prompts.get("query", "") or "")
            doc_prefix = str(prompts.get("document", prompts.get("passage", "")) or "")
    return DenseConfig(pooling, max_length, query_prefix, doc_prefix)


def pool(hidden: Any, mask: Any, mode: str) -> Any:
    """Pool ``hidden`` (batch, seq, dim) with ``mask`` (batch, seq) into (batch, dim)."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    raise InputError(f"unknown pooling {mode!r}; known: {', '.join(POOLING_MODES)}")


def l2_normalize(x: Any) -> Any:
    """Rows of ``x`` divided by their L2 norm (a zero row stays zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


@dataclass(frozen=True)
class TokenizedTexts:
    """Texts as a ``DenseEncoder`` tokenized them: its prefix added, truncated to its
    ``max_length``, special tokens included; exactly what its model runs on.

    Tokenize once (``tokenize_docs``), read the cost (``lengths``, ``total``), then
    ``encode_tokenized`` without tokenizing again. Only the encoder that made it may
    encode it (the ids are its tokenizer's).
    """

    input_ids: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        """Tokens per text."""
        return [len(x) for x in self.input_ids]

    @property
    def total(self) -> int:
        """Tokens of all the texts: what encoding them runs the model on."""
        return sum(self.lengths)


class DenseEncoder:
    """``encode_queries`` / ``encode_docs`` -> float32 arrays (n, dim), rows of unit norm.

    ``model`` is a registry name (``minilm-l6``), a directory, or a hub id. Serving calls
    run under ``torch.inference_mode`` in batches of ``batch_size`` texts sorted by token
    length (less padding); the result keeps the input order. ``embed`` is the training
    path: a tensor with grad, same pooling and normalization.

    ``precision``: ``fp32`` (the default: what training needs), ``bf16`` or ``auto``
    (``models.device.resolve_precision``: bfloat16 on CPUs with AMX or AVX512-BF16 and on
    CUDA). A bfloat16 encoder holds its weights in bfloat16 and is for inference only:
    ``embed`` refuses.
    """

    def __init__(
        self,
        model: str = "minilm-l6",
        *,
        device: str = "cpu",
        max_length: int | None = None,
        batch_size: int = 32,
        pooling: str | None = None,
        query_prefix: str | None = None,
        doc_prefix: str | None = None,
        traced: bool = True,
        precision: str = "fp32",
    ) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer

            from twofold.models.device import resolve_precision
            from twofold.models.traced import TracedForward
        except ImportError as exc:  # pragma: no cover - both are core dependencies
            raise ModelError("the dense encoder needs torch and transformers installed") from exc
        if batch_size < 1:
            raise InputError("batch size must be at least 1")
        self.name = model
        source = resolve(model)
        cfg = read_dense_config(Path(source)) if isinstance(source, Path) else DenseConfig()
        self.pooling = pooling or cfg.pooling
        if self.pooling not in POOLING_MODES:
            raise InputError(f"unknown pooling {self.pooling!r}; known: {', '.join(POOLING_MODES)}")
        self.query_prefix = cfg.query_prefix if query_prefix is None else query_prefix
        self.doc_prefix = cfg.doc_prefix if doc_prefix is None else doc_prefix
        self.device = device
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source))
            self.model = AutoModel.from_pretrained(str(source))
        except OSError as exc:
            raise ModelError(f"cannot load dense model {model!r} from {source}: {exc}") from None
        self.precision = resolve_precision(precision, device)
        self.model.eval().to(device)
        if self.precision == "bf16":
            self.model.to(torch.bfloat16)
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        wanted = max_length or cfg.max_length or limit
        self.max_length = min(wanted, limit)
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch
        self._forward = TracedForward(self.model, enabled=traced)

    def fingerprint(self) -> dict[str, str]:
        """Name and sha256 of the weights (what a manifest records)."""
        return model_fingerprint(str(self.name))

    def config(self) -> dict[str, Any]:
        """The settings a query-side encoder must share with the documents' encoder."""
        return {
            "pooling": self.pooling,
            "max_length": self.max_length,
            "query_prefix": self.query_prefix,
            "doc_prefix": self.doc_prefix,
            "dim": self.dim,
        }

    def embed(self, texts: Sequence[str], max_length: int | None = None) -> Any:
        """Training path: (len(texts), dim) torch tensor, L2-normalized, with grad;
        ``max_length``: tokens per text (default: the encoder's)."""
        if self.precision != "fp32":
            raise ModelError(
                f"this {self.name} encoder holds {self.precision} weights for inference; "
                "train one made with precision='fp32'"
            )
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=min(max_length or self.max_length, self.max_length),
            return_tensors="pt",
        ).to(self.device)
        out = self.model(**batch)
        return l2_normalize(pool(out.last_hidden_state, batch["attention_mask"], self.pooling))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_tokenized(self.tokenize_queries(texts))

    def encode_docs(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_tokenized(self.tokenize_docs(texts))

    def tokenize_queries(self, texts: Sequence[str]) -> TokenizedTexts:
        """``texts`` tokenized as ``encode_queries`` tokenizes them (query prefix added)."""
        return self._tokenize([self.query_prefix + t for t in texts])

    def tokenize_docs(self, texts: Sequence[str]) -> TokenizedTexts:
        """``texts`` tokenized as ``encode_docs`` tokenizes them (doc prefix added): count
        them (``total`` is the encoding cost), then ``encode_tokenized``."""
        return self._tokenize([self.doc_prefix + t for t in texts])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation (special tokens included), no prefix added."""
        return self._tokenize(list(texts)).lengths

    def _tokenize(self, texts: list[str]) -> TokenizedTexts:
        # Encoders are called from several threads at once. A fast tokenizer's call
        # re-applies truncation/padding to its backend only when they differ from the
        # current ones, so every serving call passes the same settings (padding is left
        # to ``tokenizer.pad``, which does not touch the backend).
        if not texts:
            return TokenizedTexts(())
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return TokenizedTexts(tuple(tuple(x) for x in encoded["input_ids"]))

    def encode_tokenized(self, batch: TokenizedTexts) -> np.ndarray:
        """Serving path for texts tokenized by this encoder: (len(batch), dim) float32,
        rows of unit norm, in the batch's order; run in batches of ``batch_size`` sorted
        by token length (less padding)."""
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        if not len(batch):
            return out
        torch = self._torch
        ids = batch.input_ids
        order = np.argsort([-len(x) for x in ids], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                padded = self.tokenizer.pad(
                    {"input_ids": [list(ids[i]) for i in rows]}, padding=True, return_tensors="pt"
                ).to(self.device)
                hidden = self._forward.hidden(padded["input_ids"], padded["attention_mask"])
                vecs = l2_normalize(pool(hidden.float(), padded["attention_mask"], self.pooling))
                out[rows] = vecs.cpu().numpy()
        return out
