"""Evaluate kNN-Embed against single-vector retrieval with simulated multi-interest users.

Protocol (issue 6), on a BEIR dataset's real judgments:

* A query qualifies when it has at least ``min_relevant`` (4) relevant documents in
  the collection (grade >= 1; Cranfield's grade 0 = "not relevant" is not counted).
* A user joins ``m`` distinct qualifying queries, ``m`` uniform in ``[m_min, m_max]``
  (2..4), drawn with ``numpy.random.default_rng(seed)``. For each query its relevant
  documents are shuffled; the first ``floor(r/2)`` join the history, the rest are that
  query's targets. A document that is history for one query is never a target for
  another (it cannot be retrieved: history is excluded).
* Both methods get the same budget ``N`` and never return history documents.
  ``recall@N`` = |retrieved ∩ targets| / |targets|; ``coverage@N`` = share of the
  user's queries (those left with >= 1 target) with at least one target retrieved;
  ``ild@N`` = mean pairwise cosine distance of the retrieved documents' embeddings.
* Metrics are averaged over users, per seed; the reported value is the mean over
  seeds (every seed has the same number of users), with the spread over seeds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twofold.core.errors import InputError
from twofold.core.types import Qrels
from twofold.indexing.collection import Collection
from twofold.indexing.corpus import BeirDataset
from twofold.models.knn_embed import MixtureParams, intra_list_diversity
from twofold.search.interests import InterestRetriever, Recommendation

log = logging.getLogger(__name__)

METHODS = ("knn_embed", "single_vector")
METRIC_NAMES = ("recall", "coverage", "ild")


@dataclass(frozen=True)
class SimUser:
    """A simulated user: the queries it joins, its history and per-query targets."""

    user_id: str
    queries: tuple[str, ...]
    history: tuple[str, ...]
    targets: dict[str, tuple[str, ...]]


def relevant_sets(
    qrels: Qrels, known: Callable[[str], bool], min_relevant: int = 4
) -> dict[str, list[str]]:
    """query id -> sorted relevant doc ids (grade >= 1, in the collection), for queries
    with at least ``min_relevant`` of them."""
    out: dict[str, list[str]] = {}
    for qid, judged in qrels.items():
        docs = sorted(d for d, g in judged.items() if g >= 1 and known(d))
        if len(docs) >= min_relevant:
            out[qid] = docs
    return out


def simulate_users(
    relevant: dict[str, list[str]], n_users: int, seed: int, m_min: int = 2, m_max: int = 4
) -> list[SimUser]:
    """``n_users`` users over the qualifying queries in ``relevant`` (deterministic per seed)."""
    qids = sorted(relevant)
    if not 1 <= m_min <= m_max:
        raise InputError(f"need 1 <= m_min <= m_max, got {m_min}, {m_max}")
    if len(qids) < m_max:
        raise InputError(
            f"only {len(qids)} queries qualify; a user joins up to {m_max} distinct queries"
        )
    rng = np.random.default_rng(seed)
    users: list[SimUser] = []
    for u in range(n_users):
        m = int(rng.integers(m_min, m_max + 1))
        chosen = [qids[i] for i in sorted(rng.choice(len(qids), size=m, replace=False))]
        history: list[str] = []
        split: dict[str, list[str]] = {}
        for qid in chosen:
            docs = [relevant[qid][i] for i in rng.permutation(len(relevant[qid]))]
            half = len(docs) // 2
            history.extend(d for d in docs[:half] if d not in history)
            split[qid] = docs[half:]
        held = set(history)
        targets = {q: tuple(d for d in ds if d not in held) for q, ds in split.items()}
        users.append(SimUser(f"s{seed}-u{u}", tuple(chosen), tuple(history), targets))
    return users


def score_user(user: SimUser, retrieved: Sequence[str], vectors: np.ndarray) -> dict[str, float]:
    """recall, coverage and ILD of one retrieved list (``vectors``: its embeddings)."""
    got = set(retrieved)
    all_targets = {d for ds in user.targets.values() for d in ds}
    recall = len(got & all_targets) / len(all_targets) if all_targets else 0.0
    live = [ds for ds in user.targets.values() if ds]
    coverage = sum(bool(got & set(ds)) for ds in live) / len(live) if live else 0.0
    return {"recall": recall, "coverage": coverage, "ild": intra_list_diversity(vectors)}


def run_users(
    retriever: InterestRetriever,
    users: Sequence[SimUser],
    budgets: Sequence[int],
    params: MixtureParams,
) -> dict[str, dict[str, float]]:
    """Mean metrics over ``users``: method -> ``recall@N``/``coverage@N``/``ild@N``."""
    sums: dict[str, dict[str, float]] = {m: {} for m in METHODS}
    for user in users:
        vecs, ordinals = retriever.history_vectors(user.history)
        exclude = set(ordinals)
        for n in budgets:
            results: dict[str, Recommendation] = {
                "knn_embed": retriever.recommend_vectors(vecs, n, params, exclude),
                "single_vector": retriever.single_vector_vectors(vecs, n, exclude),
            }
            for method, rec in results.items():
                hit_vecs = retriever.index.vectors([h.ordinal for h in rec.hits])
                for name, value in score_user(user, rec.doc_ids(), hit_vecs).items():
                    key = f"{name}@{n}"
                    sums[method][key] = sums[method].get(key, 0.0) + value
    return {m: {k: v / max(len(users), 1) for k, v in s.items()} for m, s in sums.items()}


@dataclass(frozen=True)
class InterestEvalJob:
    """``twofold eval-interests``: which collection and judgments, how many users."""

    collection: Path
    dataset: Path
    splits: tuple[str, ...] = ("test",)
    users: int = 200  # per seed
    seeds: tuple[int, ...] = (0, 1, 2)
    budgets: tuple[int, ...] = (20, 50)
    m_min: int = 2
    m_max: int = 4
    min_relevant: int = 4
    params: MixtureParams = field(default_factory=MixtureParams)
    out: Path | None = None


def merged_qrels(dataset: BeirDataset, splits: Sequence[str]) -> Qrels:
    """The union of the judgments of ``splits`` (a query judged twice keeps the max)."""
    qrels: Qrels = {}
    for split in splits:
        for qid, judged in dataset.qrels(split).items():
            into = qrels.setdefault(qid, {})
            for doc, grade in judged.items():
                into[doc] = max(grade, into.get(doc, grade))
    return qrels


def evaluate_interests(
    retriever: InterestRetriever,
    qrels: Qrels,
    *,
    users: int,
    seeds: Sequence[int],
    budgets: Sequence[int],
    params: MixtureParams,
    m_min: int = 2,
    m_max: int = 4,
    min_relevant: int = 4,
) -> dict[str, Any]:
    """Simulate users for each seed, run both methods, aggregate (see module docstring)."""
    if users < 1 or not seeds or not budgets:
        raise InputError("need at least one user, one seed and one budget")
    for n in budgets:
        if not 1 <= n <= 1000:
            raise InputError(f"budget N must be between 1 and 1000, not {n}")
    relevant = relevant_sets(qrels, lambda d: d in retriever.docs, min_relevant)
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    for seed in seeds:
        sim = simulate_users(relevant, users, seed, m_min, m_max)
        per_seed[seed] = run_users(retriever, sim, budgets, params)
    methods: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    for method in METHODS:
        keys = per_seed[seeds[0]][method].keys()
        methods[method] = {
            k: round(float(np.mean([per_seed[s][method][k] for s in seeds])), 6) for k in keys
        }
        spread[method] = {
            k: round(float(np.std([per_seed[s][method][k] for s in seeds])), 6) for k in keys
        }
    return {
        "users": users * len(seeds),
        "users_per_seed": users,
        "seeds": list(seeds),
        "qualifying_queries": len(relevant),
        "budgets": list(budgets),
        "params": asdict(params),
        "n_clusters": retriever.index.n_clusters,
        "methods": methods,
        "std_over_seeds": spread,
        "per_seed": {str(s): v for s, v in per_seed.items()},
    }


def run_interest_eval(job: InterestEvalJob) -> dict[str, Any]:
    """Run ``job`` on its collection and dataset; write ``job.out`` when given."""
    collection = Collection(job.collection)
    retriever = InterestRetriever.from_collection(collection)
    dataset = BeirDataset(job.dataset)
    result = evaluate_interests(
        retriever,
        merged_qrels(dataset, job.splits),
        users=job.users,
        seeds=job.seeds,
        budgets=job.budgets,
        params=job.params,
        m_min=job.m_min,
        m_max=job.m_max,
        min_relevant=job.min_relevant,
    )
    result = {"dataset": job.dataset.name, "splits": list(job.splits), **result}
    if job.out is not None:
        job.out.parent.mkdir(parents=True, exist_ok=True)
        job.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of ``result["methods"]`` (mean ± std over seeds)."""
    keys = list(result["methods"]["knn_embed"])
    head = f"{'method':<15}" + "".join(f"{k:>18}" for k in keys)
    lines = [
        f"{result.get('dataset', '')}: {result['users']} users over seeds {result['seeds']}, "
        f"{result['qualifying_queries']} qualifying queries, {result['n_clusters']} clusters",
        head,
        "-" * len(head),
    ]
    for method, metrics in result["methods"].items():
        std = result["std_over_seeds"][method]
        cells = "".join(f"{f'{metrics[k]:.4f} ± {std[k]:.4f}':>18}" for k in keys)
        lines.append(f"{method:<15}{cells}")
    return "\n".join(lines)
