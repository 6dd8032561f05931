"""kNN-Embed user mixtures (El-Kishky et al. 2022, arXiv 2205.06205), pure numpy.

A user is a history of item embeddings. kNN-Embed represents the user as a mixture
``p(c|u)`` over "interest" clusters ``c = 1..C`` (spherical k-means centroids ``mu_c``)
and spends the result budget ``N`` across the mixture components in proportion to
their weights, each component searched within its own cluster.

Choices the paper leaves open, made here (each a parameter of :class:`MixtureParams`):

* **Item memberships** are soft: ``p(c|x) = softmax_c(cos(x, mu_c) / tau)``
  (``temperature`` = ``tau``); ``tau = 0`` gives the hard k-means assignment, which is
  what the paper's cluster counts amount to.
* ``p_hist(c|u)`` is the mean membership of the history items (equal item weights).
* **Local smoothing.** The paper smooths a user's mixture with those of its nearest
  neighbour *users*; a Twofold history has no other users, so the neighbours are the
  ``n_neighbours`` documents nearest to the user's mean embedding (history excluded),
  and their mean membership ``p_nn`` plays that role. With ``alpha =
  neighbour_weight`` and ``beta = uniform_weight``:
  ``p(c|u) = (1 - alpha - beta) * p_hist + alpha * p_nn + beta / C``.
* **Budget**: largest-remainder (Hamilton) rounding of ``N * p(c|u)``; components that
  round to 0 are dropped; ties in the remainders go to the larger weight, then to the
  lower cluster id (deterministic).
* **Component query**: ``query_mode="user"`` (the paper's retrieval with the one user
  embedding inside each cluster) searches every component with the user's mean
  embedding; ``"component"`` (default) uses the membership-weighted mean of the history
  items for that cluster, blended with the user embedding by ``component_blend``.

Defaults (``tau = 0.02``, ``alpha = 0.1``, ``beta = 0``, 10 neighbours, ``"component"``
queries, blend 0) were chosen by a sweep on Cranfield with simulated users of a tuning
seed (100) that the reported seeds do not share; see ``BENCHMARKS.md (kNN-Embed section)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
QueryMode = Literal["user", "component"]


@dataclass(frozen=True)
class MixtureParams:
    """Hyperparameters of the user mixture (see the module docstring for the symbols).

    ``temperature`` tau >= 0 of the soft memberships (cosine units); ``neighbour_weight``
    alpha and ``uniform_weight`` beta, each in [0, 1] with alpha + beta <= 1;
    ``n_neighbours`` documents that smooth the mixture; ``max_components`` keeps only
    the heaviest components before budgeting (None = all); ``query_mode`` and
    ``component_blend`` choose each component's query vector.
    """

    temperature: float = 0.02
    neighbour_weight: float = 0.1
    uniform_weight: float = 0.0
    n_neighbours: int = 10
    max_components: int | None = None
    query_mode: QueryMode = "component"
    component_blend: float = 0.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first parameter out of range."""
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        for name in ("neighbour_weight", "uniform_weight", "component_blend"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {value}")
        if self.neighbour_weight + self.uniform_weight > 1.0 + 1e-9:
            raise ValueError("neighbour_weight + uniform_weight must be <= 1")
        if self.n_neighbours < 0:
            raise ValueError(f"n_neighbours must be >= 0, not {self.n_neighbours}")
        if self.max_components is not None and self.max_components < 1:
            raise ValueError(f"max_components must be >= 1, not {self.max_components}")
        if self.query_mode not in ("user", "component"):
            raise ValueError(f"query_mode must be 'user' or 'component', not {self.query_mode!r}")


@dataclass(frozen=True)
class Component:
    """One mixture component: its cluster, weight ``p(c|u)`` and share of the budget."""

    cluster: int
    weight: float
    budget: int


@dataclass(frozen=True)
class UserMixture:
    """``weights``: (C,) ``p(c|u)``; ``components``: the kept ones, heaviest first."""

    weights: FloatArray
    components: tuple[Component, ...]

    @property
    def budget(self) -> int:
        return sum(c.budget for c in self.components)


def normalize_rows(x: npt.ArrayLike) -> FloatArray:
    """L2-normalize the rows of a (n, d) array (zero rows stay zero)."""
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    out: FloatArray = (arr / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return out


def soft_memberships(
    vectors: npt.ArrayLike, centroids: npt.ArrayLike, temperature: float
) -> FloatArray:
    """``p(c|x)`` for each row x: (n, d) vectors, (C, d) centroids -> (n, C), rows sum to 1.

    ``softmax(cos(x, mu_c) / temperature)``; ``temperature == 0`` is the hard assignment
    (one-hot argmax, ties to the lower cluster id).
    """
    x = normalize_rows(np.atleast_2d(vectors))
    mu = normalize_rows(np.atleast_2d(centroids))
    sims = x @ mu.T
    if temperature <= 0:
        hard = np.zeros_like(sims)
        hard[np.arange(len(sims)), np.argmax(sims, axis=1)] = 1.0
        return hard
    logits = sims / np.float32(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    expd = np.exp(logits)
    out: FloatArray = (expd / expd.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def smooth_mixture(
    p_hist: npt.ArrayLike,
    p_neighbours: npt.ArrayLike | None,
    neighbour_weight: float,
    uniform_weight: float,
) -> FloatArray:
    """``(1 - alpha - beta) p_hist + alpha p_nn + beta / C``, renormalized to sum to 1.

    Without neighbours (``p_neighbours is None``) their weight ``alpha`` goes to ``p_hist``.
    """
    hist = np.asarray(p_hist, dtype=np.float64)
    n_clusters = hist.shape[0]
    alpha = neighbour_weight if p_neighbours is not None else 0.0
    mix = (1.0 - alpha - uniform_weight) * hist + uniform_weight / n_clusters
    if p_neighbours is not None:
        mix = mix + alpha * np.asarray(p_neighbours, dtype=np.float64)
    total = mix.sum()
    mix = np.full(n_clusters, 1.0 / n_clusters) if total <= 0 else mix / total
    out: FloatArray = mix.astype(np.float32)
    return out


def allocate_budget(weights: npt.ArrayLike, budget: int) -> npt.NDArray[np.int64]:
    """Split ``budget`` integer slots across components in proportion to ``weights``.

    Largest-remainder (Hamilton) rounding: every component gets ``floor(N w_c / sum w)``,
    then the slots left go one each to the largest fractional parts (ties: larger
    weight, then lower index). The result sums to ``budget`` and each entry is within
    1 of its exact quota. Zero or negative weights get nothing.
    """
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, not {budget}")
    alloc = np.zeros(w.shape[0], dtype=np.int64)
    total = w.sum()
    if budget == 0 or total <= 0:
        return alloc
    quotas = budget * w / total
    alloc[:] = np.floor(quotas + 1e-9)
    left = budget - int(alloc.sum())
    if left > 0:
        remainders = np.where(w > 0, quotas - alloc, -1.0)
        # lexsort: last key is primary -> remainder desc, weight desc, index asc
        order = np.lexsort((np.arange(w.shape[0]), -w, -remainders))
        alloc[order[:left]] += 1
    elif left < 0:  # float slack pushed a floor over; take back from the smallest quotas
        order = np.lexsort((-np.arange(w.shape[0]), w, quotas - alloc))
        for i in order:
            if left == 0:
                break
            if alloc[i] > 0:
                alloc[i] -= 1
                left += 1
    return alloc


def build_mixture(
    weights: npt.ArrayLike, budget: int, max_components: int | None = None
) -> UserMixture:
    """Budget a mixture: keep the ``max_components`` heaviest (None = all), allocate,
    drop components that get 0 slots; components ordered by weight desc, then id."""
    w = np.asarray(weights, dtype=np.float32)
    kept = w.copy()
    if max_components is not None and max_components < int((w > 0).sum()):
        order = np.lexsort((np.arange(w.shape[0]), -w))
        kept[order[max_components:]] = 0.0
    alloc = allocate_budget(kept, budget)
    order = np.lexsort((np.arange(w.shape[0]), -w))
    comps = tuple(Component(int(c), float(w[c]), int(alloc[c])) for c in order if alloc[c] > 0)
    return UserMixture(w, comps)


def user_mixture(
    history: npt.ArrayLike,
    neighbours: npt.ArrayLike | None,
    centroids: npt.ArrayLike,
    budget: int,
    params: MixtureParams,
) -> UserMixture:
    """The budgeted ``p(c|u)`` of a user.

    ``history``: (h, d) item embeddings (h >= 1); ``neighbours``: (k, d) embeddings of the
    documents nearest to the user (or None / empty); ``centroids``: (C, d).
    """
    params.validate()
    hist = np.atleast_2d(np.asarray(history, dtype=np.float32))
    if hist.shape[0] == 0:
        raise ValueError("a user mixture needs at least one history item")
    p_hist = soft_memberships(hist, centroids, params.temperature).mean(axis=0)
    p_nn = None
    if neighbours is not None and np.asarray(neighbours).size > 0:
        p_nn = soft_memberships(neighbours, centroids, params.temperature).mean(axis=0)
    mix = smooth_mixture(p_hist, p_nn, params.neighbour_weight, params.uniform_weight)
    return build_mixture(mix, budget, params.max_components)


def user_vector(history: npt.ArrayLike) -> FloatArray:
    """The single-vector user: the normalized mean of the (h, d) history embeddings, (d,)."""
    hist = np.atleast_2d(np.asarray(history, dtype=np.float32))
    out: FloatArray = normalize_rows(hist.mean(axis=0, keepdims=True))[0]
    return out


def component_queries(
    history: npt.ArrayLike,
    centroids: npt.ArrayLike,
    clusters: list[int],
    params: MixtureParams,
    user: npt.ArrayLike | None = None,
) -> FloatArray:
    """One query vector per component cluster, (len(clusters), d), rows L2-normalized.

    ``query_mode="user"``: every row is :func:`user_vector`. ``"component"``: row c is
    ``normalize((1 - b) * q_c + b * u)`` with ``q_c`` the history mean weighted by
    ``p(c|x)`` and ``b = component_blend``; a cluster no history item touches uses its
    centroid as ``q_c``. ``user`` (d,) replaces the history mean as ``u`` (e.g. a query
    vector when the "history" is a query's neighbourhood).
    """
    hist = np.atleast_2d(np.asarray(history, dtype=np.float32))
    u = user_vector(hist) if user is None else normalize_rows(np.atleast_2d(user))[0]
    if params.query_mode == "user" or not clusters:
        same: FloatArray = np.repeat(u[None, :], len(clusters), axis=0)
        return same
    mu = normalize_rows(np.atleast_2d(centroids))
    member = soft_memberships(hist, mu, params.temperature)[:, clusters]  # (h, M)
    mass = member.sum(axis=0)  # (M,)
    weighted = member.T @ normalize_rows(hist)  # (M, d)
    local = np.where(mass[:, None] > 1e-6, weighted, mu[clusters])
    blend = np.float32(params.component_blend)
    return normalize_rows((1 - blend) * normalize_rows(local) + blend * u[None, :])


def intra_list_diversity(vectors: npt.ArrayLike) -> float:
    """Mean pairwise cosine distance ``1 - cos`` over the rows of (n, d); 0 when n < 2."""
    x = normalize_rows(np.atleast_2d(vectors))
    n = x.shape[0]
    if n < 2:
        return 0.0
    sims = x @ x.T
    off = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(1.0 - off)
