"""Fusion of several rankings of one query into one ranking (pure functions).

Three families, each a pure function of the input rankings:

- :func:`rrf`: reciprocal rank fusion (Cormack, Clarke and Buettcher 2009),
  ``score(d) = sum_r w_r / (k + rank_r(d))`` with ranks from 1 and ``k = 60``.
  It reads ranks only, so it ignores the scale of each retriever's scores.
- :func:`score_fusion`: per-list score normalization (``min_max``, ``z_score``,
  ``l2``) followed by a weighted ``arithmetic``, ``geometric`` or ``harmonic`` mean.
- :func:`convex`: the convex combination ``sum_r a_r * norm_r(d)`` with
  ``a_r >= 0, sum_r a_r = 1`` (Bruch, Gai and Ingber 2023), min-max normalized by
  default; its weights are what ``twofold tune-fusion`` picks on labelled queries.

**Rule for a document missing from a list.** A list holds the top ``depth`` of a
retriever, so a document absent from it scored at most as high as the list's last
hit. RRF: the missing list contributes nothing (term 0). Score fusion: the document
takes the list's *floor* (:func:`normalize_with_floor`):

- a list with spread (its normalized values are not all equal): the lowest
  normalized value in it, i.e. 0 for ``min_max``, the last hit's z-score for
  ``z_score`` and the last hit's ``s/||s||`` for ``l2``;
- a degenerate list (one hit, or all scores equal): there is no spread to measure
  the gap by, so the floor is one unit of the normalized scale below its members:
  ``min_max`` members 1, floor 0; ``z_score`` members 0, floor -1 (one standard
  deviation); ``l2`` members ``s/||s||`` (``+-1/sqrt(n)``, or 0 when all scores are
  0), floor that minus 1.

So the floor is never above a listed value, and is strictly below the listed values
of a degenerate list: a document missing from a list is never ranked above one
retrieved by it on that list's account, and a document a one-hit list found beats
one it did not. An empty list is left out of the combination (weights are
renormalized over the lists that returned hits).

Geometric and harmonic means need positive inputs: values below ``EPS`` are mapped
into ``(0, EPS]`` by ``v -> EPS / (1 + EPS - v)``, which is increasing, so a lower
value (a floor, a negative ``l2`` score) stays lower instead of tying at a clamp;
``z_score`` (which is negative for half of the hits by construction) is refused
with them.

Ties in the fused score are broken by doc id, so fusion is deterministic.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from twofold.core.errors import InputError
from twofold.core.types import SCORE_DIGITS, Hit, Ranking, settle

Normalization = Literal["min_max", "z_score", "l2"]
Combination = Literal["arithmetic", "geometric", "harmonic"]
NORMALIZATIONS: tuple[str, ...] = ("min_max", "z_score", "l2")
COMBINATIONS: tuple[str, ...] = ("arithmetic", "geometric", "harmonic")
METHODS: tuple[str, ...] = ("rrf", "score", "convex")
RRF_K = 60
EPS = 1e-6


def _sources(
    rankings: Mapping[str, Ranking], only: Container[str] | None = None
) -> dict[str, dict[str, tuple[int, float]]]:
    """doc_id -> retriever -> (rank from 1, raw score) for every listed document (``only``:
    for these documents alone)."""
    out: dict[str, dict[str, tuple[int, float]]] = {}
    for name, ranking in rankings.items():
        for rank, hit in enumerate(ranking.hits, start=1):
            if only is not None and hit.doc_id not in only:
                continue
            # A retriever may list a document twice; its first (best) rank counts.
            out.setdefault(hit.doc_id, {}).setdefault(name, (rank, hit.score))
    return out


Sources = Mapping[str, Mapping[str, tuple[int, float]]]


def _ranked(
    query_id: str,
    scores: Mapping[str, float],
    sources: Sources | Callable[[set[str]], Sources],
    depth: int,
) -> Ranking:
    """Best first; a fused score is settled (``core.types.settle``) first, so near-ties
    from summation order are ties, ordered by doc id. ``sources``: each document's
    per-retriever (rank, score), or what makes them for the documents kept."""
    best = lambda p: (-p[1], p[0])  # noqa: E731 - a total order: ties by doc id
    if depth * 4 < len(scores):  # a short head of a long list: a heap, not a full sort
        # settling never reorders (it rounds monotonically) but may tie a score just
        # below the depth-th with it: settle only the scores that close to the cut
        cut = heapq.nlargest(depth, scores.values())[-1]
        near = cut - abs(cut) * 10.0 ** (2 - SCORE_DIGITS)
        settled = [(d, settle(s)) for d, s in scores.items() if s >= near]
        ordered = heapq.nsmallest(depth, settled, key=best)
    else:
        settled = [(d, settle(s)) for d, s in scores.items()]
        ordered = sorted(settled, key=best)[:depth]
    found = sources({d for d, _ in ordered}) if callable(sources) else sources
    return Ranking(query_id, tuple(Hit(d, s, dict(found[d])) for d, s in ordered))


def _check_weights(weights: Mapping[str, float] | None) -> Mapping[str, float]:
    weights = weights or {}
    for name, w in weights.items():
        if not (math.isfinite(w) and w >= 0):
            raise InputError(f"fusion weight for {name!r} must be a finite number >= 0, not {w}")
    return weights


def rrf(
    query_id: str,
    rankings: Mapping[str, Ranking],
    depth: int,
    k: int = RRF_K,
    weights: Mapping[str, float] | None = None,
) -> Ranking:
    """Reciprocal rank fusion: ``sum_r w_r / (k + rank_r(d))``; ``w_r`` defaults to 1."""
    if k < 0:
        raise InputError(f"RRF k must be >= 0, not {k}")
    weights = _check_weights(weights)
    sources = _sources(rankings)
    scores = {
        doc_id: sum(weights.get(name, 1.0) / (k + rank) for name, (rank, _) in per.items())
        for doc_id, per in sources.items()
    }
    return _ranked(query_id, scores, sources, depth)


def normalize(scores: Sequence[float], method: Normalization) -> list[float]:
    """Normalize one list's scores.

    ``min_max``: ``(s - min) / (max - min)`` in [0, 1]; all 1.0 when the scores are equal.
    ``z_score``: ``(s - mean) / std`` (population std); all 0.0 when the scores are equal.
    ``l2``: ``s / ||s||_2``; all 0.0 when every score is 0.
    """
    if not scores:
        return []
    if method == "min_max":
        lo, hi = min(scores), max(scores)
        if hi - lo <= 0:
            return [1.0] * len(scores)
        return [(s - lo) / (hi - lo) for s in scores]
    if method == "z_score":
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        if std <= 0:
            return [0.0] * len(scores)
        return [(s - mean) / std for s in scores]
    if method == "l2":
        norm = math.sqrt(sum(s * s for s in scores))
        if norm <= 0:
            return [0.0] * len(scores)
        return [s / norm for s in scores]
    raise InputError(f"unknown normalization {method!r}; known: {', '.join(NORMALIZATIONS)}")


def normalize_with_floor(
    scores: Sequence[float], method: Normalization
) -> tuple[list[float], float]:
    """:func:`normalize`, and the value a document missing from the list takes (the
    module docstring's rule): the lowest normalized value when they are not all equal,
    else one unit below them. ``scores`` must not be empty."""
    normed = normalize(scores, method)
    lo, hi = min(normed), max(normed)
    return normed, (lo if hi > lo else lo - 1.0)


def _positive(value: float) -> float:
    """``value`` if at least ``EPS``, else ``EPS / (1 + EPS - value)`` in ``(0, EPS)``:
    positive for the logs and reciprocals, and increasing, so order is kept."""
    return value if value >= EPS else EPS / (1.0 + (EPS - value))


def _combine(values: Iterable[tuple[float, float]], method: Combination) -> float:
    """Weighted geometric or harmonic mean of (weight, value) pairs (0.0 when no weight
    is above 0); the arithmetic mean is ``_weighted_mean``, all documents at once."""
    pairs = [(w, v) for w, v in values if w > 0]
    total = sum(w for w, _ in pairs)
    if total <= 0:
        return 0.0
    if method == "geometric":
        return math.exp(sum(w * math.log(_positive(v)) for w, v in pairs) / total)
    if method == "harmonic":
        return total / sum(w / _positive(v) for w, v in pairs)
    raise InputError(f"unknown combination {method!r}; known: {', '.join(COMBINATIONS)}")


def score_fusion(
    query_id: str,
    rankings: Mapping[str, Ranking],
    depth: int,
    normalization: Normalization = "min_max",
    combination: Combination = "arithmetic",
    weights: Mapping[str, float] | None = None,
) -> Ranking:
    """Normalize each list, give missing documents the list's floor, take a weighted mean."""
    if normalization not in NORMALIZATIONS:
        raise InputError(
            f"unknown normalization {normalization!r}; known: {', '.join(NORMALIZATIONS)}"
        )
    if combination not in COMBINATIONS:
        raise InputError(f"unknown combination {combination!r}; known: {', '.join(COMBINATIONS)}")
    if normalization == "z_score" and combination != "arithmetic":
        raise InputError(
            f"{combination} mean needs non-negative scores and z_score gives negative ones; "
            "use min_max or l2 normalization, or the arithmetic combination"
        )
    weights = _check_weights(weights)
    lists: dict[str, tuple[dict[str, float], float]] = {}  # name -> (normalized, floor)
    for name, ranking in rankings.items():
        per_doc: dict[str, float] = {}
        for hit in ranking.hits:  # a document listed twice: its first (best) score
            per_doc.setdefault(hit.doc_id, hit.score)
        if not per_doc:
            continue
        normed, floor = normalize_with_floor(list(per_doc.values()), normalization)
        lists[name] = (dict(zip(per_doc, normed, strict=True)), floor)
    docs = list(dict.fromkeys(d for normed, _ in lists.values() for d in normed))
    if combination == "arithmetic":
        scores = _weighted_mean(docs, lists, weights)
    else:
        scores = {
            doc_id: _combine(
                (
                    (weights.get(name, 1.0), normed.get(doc_id, floor))
                    for name, (normed, floor) in lists.items()
                ),
                combination,
            )
            for doc_id in docs
        }
    return _ranked(query_id, scores, lambda kept: _sources(rankings, kept), depth)


def _weighted_mean(
    docs: Iterable[str],
    lists: Mapping[str, tuple[Mapping[str, float], float]],
    weights: Mapping[str, float],
) -> dict[str, float]:
    """The weighted arithmetic mean of every document at once: each starts at the
    weighted floors and each list adds ``w * (value - floor)`` for the documents it holds,
    so the work is one step per listed hit instead of one per document and list (the
    same sums in another order: ``_ranked`` settles them)."""
    active = [
        (w, normed, floor)
        for name, (normed, floor) in lists.items()
        if (w := weights.get(name, 1.0)) > 0
    ]
    total = sum(w for w, _, _ in active)
    if total <= 0:
        return dict.fromkeys(docs, 0.0)
    scores = dict.fromkeys(docs, sum(w * floor for w, _, floor in active))
    for w, normed, floor in active:
        for doc_id, value in normed.items():
            scores[doc_id] += w * (value - floor)
    return {doc_id: score / total for doc_id, score in scores.items()}


def convex(
    query_id: str,
    rankings: Mapping[str, Ranking],
    depth: int,
    weights: Mapping[str, float] | None = None,
    normalization: Normalization = "min_max",
) -> Ranking:
    """Convex combination ``sum_r a_r * norm_r(d)``: the weights are scaled to sum to 1
    (equal when none are given); missing documents take the list's floor."""
    weights = _check_weights(weights)
    names = [n for n in rankings if rankings[n].hits]
    raw = {n: weights.get(n, 1.0) for n in names}
    total = sum(raw.values())
    alphas = {n: (w / total if total > 0 else 1.0 / len(names)) for n, w in raw.items()}
    return score_fusion(query_id, rankings, depth, normalization, "arithmetic", alphas)


@dataclass(frozen=True)
class FusionConfig:
    """Which fusion a pipeline uses; serialized into the manifest's ``pipelines`` field."""

    method: str = "rrf"  # rrf | score | convex
    k: int = RRF_K  # RRF only
    normalization: str = "min_max"  # score, convex
    combination: str = "arithmetic"  # score only
    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown fusion method {self.method!r}; known: {', '.join(METHODS)}")
        if self.normalization not in NORMALIZATIONS:
            raise InputError(
                f"unknown normalization {self.normalization!r}; known: {', '.join(NORMALIZATIONS)}"
            )
        if self.combination not in COMBINATIONS:
            raise InputError(
                f"unknown combination {self.combination!r}; known: {', '.join(COMBINATIONS)}"
            )
        z_mean = self.normalization == "z_score" and self.combination != "arithmetic"
        if self.method == "score" and z_mean:
            raise InputError(
                f"{self.combination} mean needs non-negative scores and z_score gives "
                "negative ones; use min_max or l2 normalization, or the arithmetic combination"
            )
        _check_weights(self.weights)

    def fuse(self, query_id: str, rankings: Mapping[str, Ranking], depth: int) -> Ranking:
        if self.method == "rrf":
            return rrf(query_id, rankings, depth, self.k, self.weights)
        norm = cast(Normalization, self.normalization)
        if self.method == "convex":
            return convex(query_id, rankings, depth, self.weights, norm)
        comb = cast(Combination, self.combination)
        return score_fusion(query_id, rankings, depth, norm, comb, self.weights)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "weights": dict(self.weights)}
        if self.method == "rrf":
            out["k"] = self.k
        else:
            out["normalization"] = self.normalization
        if self.method == "score":
            out["combination"] = self.combination
        return out

    @staticmethod
    def from_dict(obj: Mapping[str, Any]) -> FusionConfig:
        known = {"method", "k", "normalization", "combination", "weights"}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise InputError(f"unknown fusion fields {unknown}; known: {sorted(known)}")
        try:
            return FusionConfig(
                method=str(obj.get("method", "rrf")),
                k=int(obj.get("k", RRF_K)),
                normalization=str(obj.get("normalization", "min_max")),
                combination=str(obj.get("combination", "arithmetic")),
                weights={str(n): float(w) for n, w in dict(obj.get("weights") or {}).items()},
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"malformed fusion config {dict(obj)!r}: {exc}") from None

    def describe(self) -> str:
        weights = ", ".join(f"{n}={w:g}" for n, w in sorted(self.weights.items()))
        if self.method == "rrf":
            head = f"RRF k={self.k}"
        elif self.method == "convex":
            head = f"convex ({self.normalization})"
        else:
            head = f"{self.combination} mean of {self.normalization}"
        return head + (f", weights {weights}" if weights else "")
