"""The unseen-document query subset: guarding evaluation against a train/test leak.

On SciFact 64% of the test judgments point at documents that are also judged relevant in
train, so a model that learns *which documents* were relevant in train scores well on test
without learning to match (a query adapter trained on train lifts ``dense`` from 0.645 to
0.783 on all test queries and lowers the others). Every figure on a dataset with a
training split is therefore reported twice: on all judged queries and on the
*unseen-document queries*, those none of whose relevant documents (grade >= 1) is judged
relevant in the training split.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from twofold.core.types import Qrels

REFERENCE_SPLIT = "train"
SUBSET_NAME = "unseen_documents"


def relevant_docs(qrels: Qrels) -> set[str]:
    """Every document judged relevant (grade >= 1) for some query of ``qrels``."""
    return {d for judged in qrels.values() for d, g in judged.items() if g >= 1}


def unseen_document_queries(qrels: Qrels, reference: Qrels) -> set[str]:
    """Queries of ``qrels`` with a relevant document, none of whose relevant documents is
    relevant in ``reference`` (the training split)."""
    seen = relevant_docs(reference)
    return {
        q
        for q, judged in qrels.items()
        if any(g >= 1 for g in judged.values())
        and not any(g >= 1 and d in seen for d, g in judged.items())
    }


def subset_means(
    per_query: Mapping[str, Mapping[str, float]], subset: Collection[str]
) -> dict[str, float]:
    """Mean of each metric over the queries of ``per_query`` in ``subset`` (plus
    ``queries``, their count); empty when none is in it."""
    rows = [m for q, m in per_query.items() if q in subset]
    if not rows:
        return {}
    out = {name: float(np.mean([r[name] for r in rows])) for name in rows[0]}
    out["queries"] = float(len(rows))
    return out
