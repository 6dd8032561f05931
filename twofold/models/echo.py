"""A decoder LM as the sparse encoder: echo SPLADE (Doshi et al. 2024, arXiv 2408.11119,
Echo-Mistral-SPLADE).

A causal model's token i has seen tokens 0..i only, so a max over one pass would let
the first tokens' activations ignore the rest of the text. Echo encoding gives the text
twice and pools over the second copy only, whose tokens have each seen the whole text::

    input  = prefix + t_1..t_n + again + t_1..t_n          (the same token ids twice)
    w[j]   = log(1 + relu(max_{i in second copy} logits[i, j]))      special tokens zeroed

``prefix`` is ``"Passage:"`` (with the tokenizer's BOS when it adds one) and ``again`` is
``" Passage again:"``. The text's ids are tokenized once and reused for both copies, so
the pooled positions hold exactly the ids that document frequencies and the
inference-free query side (idf over this tokenizer) count.

:class:`EchoSparseEncoder` has :class:`~twofold.models.sparse.MLMSparseEncoder`'s
interface: ``tokenize`` (plain text ids), ``encode_ids`` / ``encode_docs`` /
``encode_queries`` / ``encode_query`` (serving, ``inference_mode``, the LM head applied
to second-copy positions only, tiled as in the MLM fast path) and ``forward(input_ids,
attention_mask)`` (training: the ids of the plain text as any tokenizer call pads them;
the echo is built inside).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from twofold.core.errors import ModelError
from twofold.models.registry import resolve
from twofold.models.sparse import MLMSparseEncoder, Pruning, activation, special_ids

ECHO_PREFIX = "Passage:"
ECHO_AGAIN = " Passage again:"
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def is_causal_lm(model: str | Path) -> bool:
    """Whether a model directory's ``config.json`` names a causal LM architecture
    (``*ForCausalLM``, GPT-2's ``*LMHeadModel``) and no masked-LM one."""
    where = resolve(str(model))
    if not isinstance(where, Path) or not (where / "config.json").is_file():
        return False
    try:
        archs = json.loads((where / "config.json").read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    names = [str(a) for a in archs]
    if any(a.endswith("ForMaskedLM") for a in names):
        return False
    return any(a.endswith(CAUSAL_SUFFIXES) for a in names)


def load_sparse_encoder(model: str | Path, **kwargs: Any) -> MLMSparseEncoder:
    """The sparse encoder of ``model``: :class:`EchoSparseEncoder` for a causal LM
    directory, else :class:`MLMSparseEncoder` (masked LM)."""
    if is_causal_lm(model):
        return EchoSparseEncoder(model, **kwargs)
    return MLMSparseEncoder(model, **kwargs)


class EchoSparseEncoder(MLMSparseEncoder):
    """Echo SPLADE over any Hugging Face ``*ForCausalLM`` (see the module docstring).

    ``max_length`` / ``query_max_length``: tokens of the text (one copy); both are
    capped so that the echoed input fits the model's ``max_position_embeddings``.
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
        precision: str = "fp32",  # accepted for the MLM encoder's signature: echo stays fp32
    ) -> None:
        from transformers import AutoModelForCausalLM

        from twofold.models.sparse import load_tokenizer

        self.name = str(model)
        where = resolve(str(model))
        self.tokenizer = load_tokenizer(where if isinstance(where, Path) else Path(where))
        try:
            loaded: Any = AutoModelForCausalLM.from_pretrained(str(where))
            self.model = loaded.to(device).eval()
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load a causal LM from {where}: {exc}") from None
        if self.tokenizer.pad_token_id is None:  # GPT-2/Llama style: pad with EOS
            if self.tokenizer.eos_token is None:
                raise ModelError(f"{where}: the tokenizer has neither a pad nor an EOS token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device
        self.pruning = pruning or Pruning()
        self.token_budget = token_budget
        self.vocab_tile = vocab_tile
        self.row_multiple = 16
        self.precision = "fp32"
        self.special = special_ids(self.tokenizer)
        head = self.model.get_output_embeddings()
        if head is None:
            raise ModelError(f"{where}: the causal LM has no output embeddings (LM head)")
        self.vocab_size = int(head.weight.shape[0])
        self._prefix = list(self.tokenizer(ECHO_PREFIX)["input_ids"])  # BOS if it adds one
        self._again = list(self.tokenizer(ECHO_AGAIN, add_special_tokens=False)["input_ids"])
        max_pos = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        fits = (max_pos - len(self._prefix) - len(self._again)) // 2 if max_pos else None
        if fits is not None and fits < 1:
            raise ModelError(f"{where}: max_position_embeddings {max_pos} cannot hold an echo")
        self.max_length = max_length if fits is None else min(max_length, fits)
        self.query_max_length = query_max_length if fits is None else min(query_max_length, fits)
        self._head = None  # the MLM split head; echo has its own serving path

    # ------------------------------------------------------------------------ inputs
    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """The plain text ids (no special tokens), at most ``max_length`` per text."""
        n = min(max_length, self.max_length)
        out = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=n)
        return [list(ids) for ids in out["input_ids"]]

    def echo_inputs(
        self, ids: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Text id lists -> right-padded (input_ids, attention_mask, second_copy_mask),
        each (B, L'). ``second_copy_mask`` is 1 on the second copy's tokens only."""
        rows, seconds = [], []
        for x in ids:
            text = [int(t) for t in x]
            head = self._prefix + text + self._again
            rows.append(head + text)
            seconds.append((len(head), len(head) + len(text)))
        longest = max(len(r) for r in rows)
        pad = int(self.tokenizer.pad_token_id or 0)
        input_ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        second = torch.zeros((len(rows), longest), dtype=torch.long)
        for r, (row, (s, e)) in enumerate(zip(rows, seconds, strict=True)):
            input_ids[r, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[r, : len(row)] = 1
            second[r, s:e] = 1
        return input_ids.to(self.device), mask.to(self.device), second.to(self.device)

    def _texts_of(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
        """The unpadded, special-token-free ids of each row (either padding side)."""
        special = set(self.special)
        out = []
        for ids, m in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            text = [t for t, keep in zip(ids, m, strict=True) if keep and t not in special]
            out.append(text[: self.max_length])
        return out

    def _hidden(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last hidden states (after the final norm), (B, L', H)."""
        out = self.model.base_model(input_ids=input_ids, attention_mask=mask)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden

    def _zero_special(self, weights: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(weights.shape[-1], device=weights.device, dtype=weights.dtype)
        keep[[j for j in self.special if j < weights.shape[-1]]] = 0.0
        return weights * keep

    # ------------------------------------------------------------------ training path
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask of the plain texts -> (B, V) echo weights, with grad."""
        ids, mask, second = self.echo_inputs(self._texts_of(input_ids, attention_mask))
        logits = self.model.get_output_embeddings()(self._hidden(ids, mask))  # (B, L', V)
        masked = logits * second.unsqueeze(-1).to(logits.dtype)
        return self._zero_special(activation(masked.amax(dim=1)))

    # ------------------------------------------------------------------- serving path
    def _encode_batch(self, ids: list[Sequence[int]]) -> torch.Tensor:
        """Text id lists -> (B, V): the LM head on second-copy positions only, tiled."""
        input_ids, mask, second = self.echo_inputs(ids)
        hidden = self._hidden(input_ids, mask)
        flat = hidden[second.bool()]  # (sum of text lengths, H)
        lengths = [len(x) for x in ids]
        head = self.model.get_output_embeddings()
        weight = head.weight.detach()
        maxes = torch.zeros((len(ids), self.vocab_size), device=flat.device, dtype=weight.dtype)
        full = [t for t, n in enumerate(lengths) if n > 0]  # an empty text stays 0
        if full:
            starts = [0]
            for n in lengths:
                starts.append(starts[-1] + n)
            rows = torch.cat([flat[starts[t] : starts[t + 1]] for t in full])
            maxes[full] = self._segment_max(rows, [lengths[t] for t in full], weight)
        bias = getattr(head, "bias", None)
        if bias is not None:
            maxes = maxes + bias.detach()
        weights = activation(maxes)
        weights[:, [j for j in self.special if j < self.vocab_size]] = 0.0
        if full and len(full) < len(ids):
            empty = [t for t, n in enumerate(lengths) if n == 0]
            weights[empty] = 0.0
        return weights
