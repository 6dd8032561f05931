"""Multi-interest retrieval with kNN-Embed (El-Kishky et al. 2022, arXiv 2205.06205).

A user (a history of doc ids and/or free texts) or a query's neighbourhood becomes a
mixture ``p(c|u)`` over the ``interests`` clusters (:mod:`twofold.models.knn_embed`);
the budget ``N`` is split across the components, each component is searched within
its own cluster (one inverted list of the interests IVF index), and the lists are
merged and deduplicated, history items dropped.

Choices made here (parameters of :class:`InterestRetriever` methods):

* Each component's search fetches ``budget + (history items in that cluster) +
  slack`` candidates, so dropping history items and duplicates still fills its slots.
* A cluster smaller than its share leaves slots empty; they are filled from an exact
  search of the whole index with the user vector (``fill=True``, default), and those
  hits are marked ``filled``.
* Merge order ``"proportional"`` (default): hits interleaved so that every prefix of the
  list holds the components in proportion to their budgets (the next hit comes from
  the component with the lowest ``(taken + 1) / budget``, heavier first on ties);
  ``"score"``: all hits by score, best first.
* The single-vector baseline searches the same index exhaustively with the normalized
  mean of the history embeddings.
* History texts are encoded as documents (``tokenize_docs`` then ``encode_tokenized``,
  so a caller that counts their tokens first tokenizes them once: ``tokenize_texts``);
  a diversified query is encoded as a query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from twofold.core.errors import InputError, NotFoundError
from twofold.core.types import Hit, Ranking
from twofold.indexing.collection import Collection
from twofold.indexing.dense.interests import InterestIndex
from twofold.indexing.docstore import DocStore
from twofold.models.dense import TokenizedTexts
from twofold.models.knn_embed import (
    Component,
    MixtureParams,
    UserMixture,
    build_mixture,
    component_queries,
    normalize_rows,
    user_mixture,
    user_vector,
)

FloatArray = npt.NDArray[np.float32]
MergeOrder = Literal["proportional", "score"]
MAX_K = 1000
MAX_HISTORY = 1000
SLACK = 8  # extra candidates per component against duplicates


class TextEncoder(Protocol):
    def encode_queries(self, texts: Sequence[str]) -> Any: ...

    def tokenize_docs(self, texts: Sequence[str]) -> TokenizedTexts: ...

    def encode_tokenized(self, batch: TokenizedTexts) -> Any: ...


@dataclass(frozen=True)
class InterestHit:
    """A retrieved document: its ordinal and id, score (inner product with the query
    of its component), the interest cluster it came from, and whether it filled a
    slot a too-small cluster left empty."""

    ordinal: int
    doc_id: str
    score: float
    interest: int
    filled: bool = False


@dataclass(frozen=True)
class Recommendation:
    """Hits of one multi-interest (or single-vector) retrieval and the mixture used
    (``mixture`` is None for the single-vector baseline)."""

    hits: tuple[InterestHit, ...]
    mixture: UserMixture | None
    method: str
    info: dict[str, Any] = field(default_factory=dict)

    def doc_ids(self) -> list[str]:
        return [h.doc_id for h in self.hits]

    def to_ranking(self, query_id: str = "user") -> Ranking:
        """A core :class:`Ranking`; ``sources["interests"] = (rank, score)``."""
        return Ranking(
            query_id,
            tuple(
                Hit(h.doc_id, h.score, {"interests": (i, h.score)})
                for i, h in enumerate(self.hits, start=1)
            ),
        )


def merge_components(
    lists: Sequence[Sequence[tuple[int, float]]],
    budgets: Sequence[int],
    order: MergeOrder = "proportional",
    exclude: set[int] | None = None,
) -> list[tuple[int, float, int]]:
    """Merge per-component candidate lists into (ordinal, score, component) triples.

    Component ``i`` contributes at most ``budgets[i]`` documents, taken in its list
    order, skipping ordinals in ``exclude`` and ordinals already taken (dedup: a
    document counts once, for the first component that takes it in merge order).
    """
    if len(lists) != len(budgets):
        raise ValueError("one budget per list")
    seen: set[int] = set(exclude or ())
    cursors = [0] * len(lists)
    taken = [0] * len(lists)
    merged: list[tuple[int, float, int]] = []
    active = [i for i, b in enumerate(budgets) if b > 0]
    while active:
        # proportional schedule: the component furthest behind its share goes next
        i = min(active, key=lambda j: ((taken[j] + 1) / budgets[j], j))
        candidates = lists[i]
        while cursors[i] < len(candidates) and candidates[cursors[i]][0] in seen:
            cursors[i] += 1
        if cursors[i] >= len(candidates):
            active.remove(i)
            continue
        ordinal, score = candidates[cursors[i]]
        cursors[i] += 1
        seen.add(ordinal)
        merged.append((ordinal, score, i))
        taken[i] += 1
        if taken[i] >= budgets[i]:
            active.remove(i)
    if order == "score":
        merged.sort(key=lambda t: (-t[1], t[0]))
    return merged


class InterestRetriever:
    """kNN-Embed retrieval over an opened ``interests`` index and the doc store.

    ``encoder`` turns free texts (history texts, diversified queries) into vectors in
    the same space as the documents; without one, only doc-id histories work.
    """

    def __init__(
        self, index: InterestIndex, docs: DocStore, encoder: TextEncoder | None = None
    ) -> None:
        self.index = index
        self.docs = docs
        self.encoder = encoder

    @classmethod
    def from_collection(
        cls, collection: Collection, encoder: TextEncoder | None = None
    ) -> InterestRetriever:
        """Over ``collection``'s interests index; texts are encoded by its dense sub-index
        (the encoder that built the vectors, loaded on first use) unless ``encoder``."""
        index: InterestIndex = collection.index("interests")
        if encoder is None and collection.has("dense"):
            encoder = collection.index("dense")
        return cls(index, collection.docs, encoder)

    # -- inputs ------------------------------------------------------------------

    def resolve_history(self, doc_ids: Sequence[str]) -> list[int]:
        """Doc-store ordinals of ``doc_ids``; every unknown id is named in one error."""
        unknown = [d for d in doc_ids if d not in self.docs]
        if unknown:
            shown = ", ".join(repr(d) for d in unknown[:20])
            more = f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else ""
            raise NotFoundError(
                f"unknown doc ids in history: {shown}{more}; give ids of documents in the "
                'collection, or send free text as a text item (`--text`, `{"text": ...}`)'
            )
        return [self.docs.ordinal(d) for d in doc_ids]

    def _text_encoder(self) -> TextEncoder:
        if self.encoder is None:
            raise InputError("free-text history needs the dense encoder, which is not loaded")
        return self.encoder

    def tokenize_texts(self, texts: Sequence[str]) -> TokenizedTexts:
        """Free history ``texts`` tokenized as documents, once. Its ``total`` is the tokens
        encoding them runs the model on (after truncation): what free-text history costs.
        Pass it as ``texts`` to ``recommend`` / ``history_vectors`` to encode it without
        tokenizing again."""
        if not texts:
            return TokenizedTexts(())
        if any(not t.strip() for t in texts):
            raise InputError("a history text is empty")
        return self._text_encoder().tokenize_docs(texts)

    def _text_vectors(self, texts: Sequence[str] | TokenizedTexts) -> FloatArray:
        """(len(texts), d) embeddings of free history texts, encoded as documents."""
        batch = texts if isinstance(texts, TokenizedTexts) else self.tokenize_texts(texts)
        if not len(batch):
            return np.zeros((0, self.index.dim), dtype=np.float32)
        return self._checked(self._text_encoder().encode_tokenized(batch))

    def _checked(self, raw: Any) -> FloatArray:
        vecs = normalize_rows(np.asarray(raw, dtype=np.float32))
        if vecs.shape[1] != self.index.dim:
            raise InputError(
                f"the encoder gives {vecs.shape[1]}-d vectors, the interests index holds "
                f"{self.index.dim}-d ones"
            )
        return vecs

    def history_vectors(
        self, doc_ids: Sequence[str], texts: Sequence[str] | TokenizedTexts = ()
    ) -> tuple[FloatArray, list[int]]:
        """(h, d) embeddings of a history and the ordinals of its doc ids; ``texts`` as
        strings or as ``tokenize_texts`` gave them."""
        if len(doc_ids) + len(texts) == 0:
            raise InputError("the history is empty; give at least one doc id or text")
        if len(doc_ids) + len(texts) > MAX_HISTORY:
            raise InputError(f"a history holds at most {MAX_HISTORY} items")
        ordinals = self.resolve_history(doc_ids)
        vecs = np.concatenate([self.index.vectors(ordinals), self._text_vectors(texts)])
        return vecs, ordinals

    # -- retrieval ---------------------------------------------------------------

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, not {k}")

    def _neighbours(self, user: FloatArray, exclude: set[int], n: int) -> FloatArray:
        if n <= 0:
            return np.zeros((0, self.index.dim), dtype=np.float32)
        _, ids = self.index.search_all(user[None, :], n + len(exclude))
        picked = [int(i) for i in ids[0] if i >= 0 and int(i) not in exclude][:n]
        return self.index.vectors(picked)

    def _component_hits(
        self,
        mixture: UserMixture,
        queries: FloatArray,
        exclude: set[int],
        order: MergeOrder,
    ) -> list[InterestHit]:
        comps = mixture.components
        if not comps:
            return []
        clusters = [c.cluster for c in comps]
        excl_assign = self.index.assignments[sorted(exclude)] if exclude else np.zeros(0)
        need = [c.budget + int((excl_assign == c.cluster).sum()) + SLACK for c in comps]
        scores, ids = self.index.search_in_clusters(queries, clusters, max(need))
        lists = [
            [(int(i), float(s)) for s, i in zip(scores[r], ids[r], strict=True) if i >= 0]
            for r in range(len(comps))
        ]
        merged = merge_components(lists, [c.budget for c in comps], order, exclude)
        return [InterestHit(o, self.docs.ids[o], s, comps[j].cluster) for o, s, j in merged]

    def _fill(
        self, user: FloatArray, hits: list[InterestHit], exclude: set[int], k: int
    ) -> list[InterestHit]:
        missing = k - len(hits)
        if missing <= 0:
            return hits
        taken = exclude | {h.ordinal for h in hits}
        scores, ids = self.index.search_all(user[None, :], min(len(self.index), k + len(exclude)))
        for s, i in zip(scores[0], ids[0], strict=True):
            if missing == 0:
                break
            o = int(i)
            if o < 0 or o in taken:
                continue
            taken.add(o)
            hits.append(
                InterestHit(o, self.docs.ids[o], float(s), int(self.index.assignments[o]), True)
            )
            missing -= 1
        return hits

    def recommend_vectors(
        self,
        history: FloatArray,
        k: int,
        params: MixtureParams | None = None,
        exclude: set[int] | None = None,
        *,
        order: MergeOrder = "proportional",
        fill: bool = True,
        user: FloatArray | None = None,
        not_neighbours: set[int] | None = None,
    ) -> Recommendation:
        """kNN-Embed over (h, d) history embeddings; ordinals in ``exclude`` are never
        returned (the history's own documents). ``user`` overrides the user vector;
        ``not_neighbours`` are also skipped when picking the smoothing neighbours."""
        self._check_k(k)
        params = params or MixtureParams()
        try:
            params.validate()
        except ValueError as exc:
            raise InputError(str(exc)) from None
        excluded = exclude or set()
        u = user_vector(history) if user is None else normalize_rows(user[None, :])[0]
        n_nn = params.n_neighbours if params.neighbour_weight > 0 else 0
        nn = self._neighbours(u, excluded | (not_neighbours or set()), n_nn)
        mixture = user_mixture(history, nn, self.index.centroids, k, params)
        queries = component_queries(
            history, self.index.centroids, [c.cluster for c in mixture.components], params, u
        )
        hits = self._component_hits(mixture, queries, excluded, order)
        n_components = len(hits)
        if fill:
            hits = self._fill(u, hits, excluded, k)
        return Recommendation(
            tuple(hits),
            mixture,
            "knn_embed",
            info={"filled": len(hits) - n_components},
        )

    def single_vector_vectors(
        self, history: FloatArray, k: int, exclude: set[int] | None = None
    ) -> Recommendation:
        """The baseline: exact search with the normalized history mean, ``exclude`` dropped."""
        self._check_k(k)
        hits = self._fill(user_vector(history), [], exclude or set(), k)
        plain = tuple(InterestHit(h.ordinal, h.doc_id, h.score, h.interest) for h in hits)
        return Recommendation(plain, None, "single_vector")

    def recommend(
        self,
        doc_ids: Sequence[str],
        k: int = 10,
        params: MixtureParams | None = None,
        texts: Sequence[str] | TokenizedTexts = (),
        *,
        method: Literal["knn_embed", "single_vector"] = "knn_embed",
        order: MergeOrder = "proportional",
    ) -> Recommendation:
        """Recommend ``k`` documents for a history of ``doc_ids`` and free ``texts``
        (strings, or ``tokenize_texts`` of them); the history's own documents are never
        returned."""
        vecs, ordinals = self.history_vectors(doc_ids, texts)
        if method == "single_vector":
            return self.single_vector_vectors(vecs, k, set(ordinals))
        if method != "knn_embed":
            raise InputError(f"method must be knn_embed or single_vector, not {method!r}")
        return self.recommend_vectors(vecs, k, params, set(ordinals), order=order)

    def diversify(
        self,
        query_vector: FloatArray,
        k: int,
        params: MixtureParams | None = None,
        neighbourhood: int = 20,
        *,
        order: MergeOrder = "proportional",
    ) -> Recommendation:
        """kNN-Embed applied to a query: its ``neighbourhood`` nearest documents play the
        history (their memberships give ``p(c|q)``), smoothed as for a user (the
        neighbours are the documents ranked next), and every component is searched with
        the query vector itself. Nothing is excluded: the neighbourhood are results."""
        self._check_k(k)
        if not 1 <= neighbourhood <= MAX_K:
            raise InputError(f"neighbourhood must be between 1 and {MAX_K}")
        q = normalize_rows(np.asarray(query_vector, dtype=np.float32).reshape(1, -1))[0]
        _, ids = self.index.search_all(q[None, :], neighbourhood)
        hood = [int(i) for i in ids[0] if i >= 0]
        rec = self.recommend_vectors(
            self.index.vectors(hood),
            k,
            params,
            set(),
            order=order,
            user=q,
            not_neighbours=set(hood),
        )
        return Recommendation(rec.hits, rec.mixture, "diversify", info=rec.info)

    def diversify_text(
        self,
        query: str,
        k: int,
        params: MixtureParams | None = None,
        neighbourhood: int = 20,
        *,
        order: MergeOrder = "proportional",
    ) -> Recommendation:
        """:meth:`diversify` for a query text (encoded with ``encode_queries``)."""
        if not query.strip():
            raise InputError("the query is empty")
        vec = self._checked(self._text_encoder().encode_queries([query]))[0]
        return self.diversify(vec, k, params, neighbourhood, order=order)

    def diversify_ranking(
        self,
        ranking: Ranking,
        k: int,
        params: MixtureParams | None = None,
        neighbourhood: int = 20,
    ) -> DiversifiedRanking:
        """Diversify any pipeline's ranking (bm25, dense, hybrid, reranked) down to ``k``.

        The top ``neighbourhood`` hits play the history, the hits ranked next the
        smoothing neighbours (``params.n_neighbours`` of them); ``k`` is split across
        the mixture's components and each component takes its hits from the candidates
        in its cluster, in the ranking's own order. Slots a cluster cannot fill go to
        the best remaining candidates. Hits keep their scores and sources; the order is
        the proportional interleave. Give a ranking deeper than ``k`` (e.g. 100).
        """
        self._check_k(k)
        params = params or MixtureParams()
        try:
            params.validate()
        except ValueError as exc:
            raise InputError(str(exc)) from None
        hits = [h for h in ranking.hits if h.doc_id in self.docs]
        if not hits:
            return DiversifiedRanking(Ranking(ranking.query_id, ()), (), None)
        ordinals = [self.docs.ordinal(h.doc_id) for h in hits]
        hood = max(1, min(neighbourhood, len(hits)))
        nn = ordinals[hood : hood + params.n_neighbours] if params.neighbour_weight > 0 else []
        mixture = user_mixture(
            self.index.vectors(ordinals[:hood]),
            self.index.vectors(nn) if nn else None,
            self.index.centroids,
            min(k, len(hits)),
            params,
        )
        clusters = self.index.assignments[ordinals]
        lists = [
            [(i, hits[i].score) for i in range(len(hits)) if clusters[i] == c.cluster]
            for c in mixture.components
        ]
        merged = merge_components(lists, [c.budget for c in mixture.components])
        picked = [i for i, _, _ in merged]
        taken = set(picked)
        picked += [i for i in range(len(hits)) if i not in taken][: min(k, len(hits)) - len(picked)]
        return DiversifiedRanking(
            Ranking(ranking.query_id, tuple(hits[i] for i in picked)),
            tuple(int(clusters[i]) for i in picked),
            mixture,
        )


@dataclass(frozen=True)
class DiversifiedRanking:
    """A diversified ranking, each hit's interest cluster (parallel to its hits) and the
    query's mixture (None when the ranking was empty)."""

    ranking: Ranking
    interests: tuple[int, ...]
    mixture: UserMixture | None


def mixture_json(mixture: UserMixture | None) -> list[dict[str, Any]]:
    """The kept components as JSON-ready dicts: interest, weight, budget."""
    if mixture is None:
        return []
    return [
        {"interest": c.cluster, "weight": round(c.weight, 6), "budget": c.budget}
        for c in mixture.components
    ]


__all__ = [
    "Component",
    "DiversifiedRanking",
    "InterestHit",
    "InterestRetriever",
    "MixtureParams",
    "Recommendation",
    "build_mixture",
    "merge_components",
    "mixture_json",
]
