"""Cross-encoder reranker: a Hugging Face ``*ForSequenceClassification`` model scoring
(query, document) pairs.

Loads any such directory (or a hub id such as ``cross-encoder/ms-marco-MiniLM-L-6-v2``
where a hub is reachable), e.g. the Margin-MSE distilled model of ``twofold train
reranker``. Scoring is batched, under ``torch.inference_mode``.

Truncation policy: the query keeps at most ``min(max_query_tokens, max_length // 2)``
word pieces (a long query cannot crowd the document out), then each pair is cut to
``max_length`` tokens (at most the model's position count) by truncating the document
only (``only_second``), so the start of the document (title, then text) is read.

Threads: a Hugging Face tokenizer changes its (Rust) truncation and padding state on
each call that asks for other settings, so two threads sharing one can fail ("Unable
to create tensor") or truncate by the other's settings. Each thread that scores gets
its own copy of the tokenizer (made on its first call); the model is shared (a forward
pass under ``inference_mode`` is safe from several threads).

Score: the single logit of a one-label model (the usual MS MARCO cross-encoders);
for a two-label model, ``logit[1] - logit[0]`` (log-odds of "relevant"), which ranks
as the softmax probability does.

Speed: candidates are scored in batches of similar length (sorted by text length, so a
batch pads little), and ``quantize`` swaps every ``nn.Linear`` for a dynamic int8 one
(``torch.ao.quantization.quantize_dynamic``; CPU only). A model not quantized runs in
``precision`` (``auto``: bfloat16 where the hardware multiplies it natively, as the
encoders do; ``models.device``); the scores come back as float32.

A directory made by ``twofold train reranker`` holds ``twofold_reranker.json``
(:data:`SETTINGS_FILE`): ``alpha``, the interpolation weight the pipeline gives the
reranker's score against the fused first-stage score (tuned on held-out training
queries), ``max_length`` (the length it was trained and timed at; the smaller of it and
the config's is used) and ``int8`` (quantize unless the config says otherwise). A model
without that file has ``alpha = None``: its score replaces the fused one.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twofold.core.errors import DependencyError, ModelError, TwofoldError

log = logging.getLogger(__name__)

SETTINGS_FILE = "twofold_reranker.json"


def read_settings(directory: Path) -> dict[str, Any]:
    """The ``twofold_reranker.json`` of a model directory ({} when it has none)."""
    path = directory / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    alpha = data.get("alpha") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not (alpha is None or 0.0 <= float(alpha) <= 1.0):
        raise ModelError(f"{path}: expected an object with alpha in [0, 1]")
    return data


class RerankTimeout(TwofoldError):
    """The reranker's time budget ran out before every batch was scored."""


@dataclass(frozen=True)
class RerankerConfig:
    """``path``: model directory or hub id; ``batch_size``: pairs per forward pass;
    ``max_length``: tokens per (query, document) pair; ``max_query_tokens``: query cap."""

    path: str
    batch_size: int = 16
    max_length: int = 256
    max_query_tokens: int = 64
    device: str = "cpu"
    quantize: bool | None = None  # dynamic int8 Linear layers; None: as the model dir says
    precision: str = "auto"  # of a model not quantized: models.device.resolve_precision

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_length < 8 or self.max_query_tokens < 1:
            raise ModelError("reranker batch_size >= 1, max_length >= 8, max_query_tokens >= 1")


class CrossEncoder:
    """``score(query, texts) -> list[float]``, higher = more relevant."""

    def __init__(self, config: RerankerConfig) -> None:
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - hard dependencies
            raise DependencyError("the reranker needs torch and transformers") from exc
        self.config = config
        self.name = Path(config.path).name or config.path
        path = Path(config.path).expanduser()
        source = str(path) if path.is_dir() else config.path
        looks_like_path = config.path.startswith((".", "/", "~")) or "/" not in config.path
        if not path.is_dir() and looks_like_path:
            raise ModelError(
                f"reranker {config.path!r} is not a directory (nor a hub id org/name); give the "
                "directory of a *ForSequenceClassification model"
            )
        try:
            self._base_tokenizer: Any = AutoTokenizer.from_pretrained(source)
            self._model: Any = AutoModelForSequenceClassification.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load a reranker from {config.path}: {exc}") from None
        self._num_labels = int(self._model.config.num_labels)
        if self._num_labels not in (1, 2):
            raise ModelError(
                f"reranker {config.path} has {self._num_labels} labels; expected 1 (a relevance "
                "logit) or 2 (not relevant, relevant)"
            )
        # Never ask for more positions than the model has (a longer pair would crash it).
        limits = [config.max_length, int(getattr(self._model.config, "max_position_embeddings", 0))]
        limits.append(int(getattr(self._base_tokenizer, "model_max_length", 0) or 0))
        settings = read_settings(path) if path.is_dir() else {}
        limits.append(int(settings.get("max_length", 0) or 0))
        self.max_length = min(x for x in limits if x > 0)
        alpha = settings.get("alpha")
        self.alpha: float | None = None if alpha is None else float(alpha)
        self._model.to(config.device).eval()
        self.quantized = bool(
            settings.get("int8", False) if config.quantize is None else config.quantize
        )
        self.precision = "int8"
        if self.quantized:
            if config.device != "cpu":
                raise ModelError("int8 quantization of the reranker runs on the cpu only")
            self._model = quantize_int8(self._model, torch)
        else:
            from twofold.models.device import resolve_precision

            self.precision = resolve_precision(config.precision, config.device)
            if self.precision == "bf16":
                self._model.to(torch.bfloat16)
        self._torch = torch
        self._local = threading.local()
        self._copy_lock = threading.Lock()

    @property
    def _tokenizer(self) -> Any:
        """This thread's tokenizer (a copy of the loaded one; see the module docstring)."""
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            with self._copy_lock:  # the loaded one is only read here, never called
                tokenizer = copy.deepcopy(self._base_tokenizer)
            self._local.tokenizer = tokenizer
        return tokenizer

    def _truncate_query(self, query: str) -> str:
        ids = self._tokenizer(query, add_special_tokens=False)["input_ids"]
        cap = min(self.config.max_query_tokens, self.max_length // 2)
        if len(ids) <= cap:
            return query
        return str(self._tokenizer.decode(ids[:cap]))

    def score(self, query: str, texts: Sequence[str], deadline: float | None = None) -> list[float]:
        """Scores for ``texts`` in order; raises ``RerankTimeout`` past ``deadline``
        (a ``time.monotonic()`` instant), checked before each batch."""
        if not texts:
            return []
        tokenizer = self._tokenizer
        q = self._truncate_query(query)
        # Longest first, so each batch holds texts of similar length (little padding).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [0.0] * len(texts)
        bs = self.config.batch_size
        for start in range(0, len(texts), bs):
            if deadline is not None and time.monotonic() >= deadline:
                raise RerankTimeout(f"time budget ran out after {start} of {len(texts)} candidates")
            positions = order[start : start + bs]
            batch = [texts[i] for i in positions]
            enc = tokenizer(
                [q] * len(batch),
                batch,
                truncation="only_second",
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.config.device)
            with self._torch.inference_mode():
                logits = self._model(**enc).logits  # [batch, num_labels]
            scores = logits[:, 0] if self._num_labels == 1 else logits[:, 1] - logits[:, 0]
            for i, value in zip(positions, scores.float().cpu().tolist(), strict=True):
                out[i] = float(value)
        return out


def quantize_int8(model: Any, torch: Any) -> Any:
    """``model`` with every ``nn.Linear`` replaced by a dynamic int8 one (weights int8,
    activations quantized per batch); CPU inference only."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_reranker(config: RerankerConfig) -> CrossEncoder:
    log.info("loading reranker %s", config.path)
    return CrossEncoder(config)
