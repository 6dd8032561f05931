"""CLI subcommands of kNN-Embed: ``twofold recommend`` and ``twofold eval-interests``.

Thin wrappers: the work is in :mod:`twofold.search.interests` and
:mod:`twofold.search.interests_eval`. ``add_interest_commands`` is called by
``twofold.app.cli.build_parser``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from twofold.core.errors import InputError
from twofold.models.knn_embed import MixtureParams


def _out(text: str) -> None:
    """CLI output (stdout); library code logs instead."""
    sys.stdout.write(text + "\n")


def _int_list(value: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {value!r}"
        ) from None
    if not items:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return items


def add_mixture_args(p: argparse.ArgumentParser) -> None:
    """The :class:`MixtureParams` flags (defaults from the dataclass)."""
    d = MixtureParams()
    g = p.add_argument_group("kNN-Embed mixture")
    g.add_argument("--temperature", type=float, default=d.temperature, help="membership tau")
    g.add_argument(
        "--neighbour-weight", type=float, default=d.neighbour_weight, help="alpha (kNN smoothing)"
    )
    g.add_argument(
        "--uniform-weight", type=float, default=d.uniform_weight, help="beta (uniform prior)"
    )
    g.add_argument(
        "--neighbours", type=int, default=d.n_neighbours, help="docs that smooth the mixture"
    )
    g.add_argument("--max-components", type=int, default=None, help="keep the heaviest M")
    g.add_argument("--query-mode", choices=["user", "component"], default=d.query_mode)
    g.add_argument("--component-blend", type=float, default=d.component_blend)


def mixture_params(args: argparse.Namespace) -> MixtureParams:
    params = MixtureParams(
        temperature=args.temperature,
        neighbour_weight=args.neighbour_weight,
        uniform_weight=args.uniform_weight,
        n_neighbours=args.neighbours,
        max_components=args.max_components,
        query_mode=args.query_mode,
        component_blend=args.component_blend,
    )
    try:
        params.validate()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return params


def _recommend(args: argparse.Namespace) -> int:
    from twofold.indexing.collection import Collection
    from twofold.search.interests import InterestRetriever, mixture_json

    collection = Collection(Path(args.dir))
    retriever = InterestRetriever.from_collection(collection)
    ids = [d.strip() for v in args.history or [] for d in v.split(",") if d.strip()]
    rec = retriever.recommend(
        ids,
        args.k,
        mixture_params(args),
        texts=args.text or [],
        method=args.method,
        order=args.order,
    )
    if args.json:
        payload = {
            "method": rec.method,
            "mixture": mixture_json(rec.mixture),
            "hits": [
                {
                    "rank": i,
                    "doc_id": h.doc_id,
                    "score": h.score,
                    "interest": h.interest,
                    "filled": h.filled,
                    "title": collection.docs.get(h.doc_id).title,
                }
                for i, h in enumerate(rec.hits, start=1)
            ],
        }
        _out(json.dumps(payload, indent=2))
        return 0
    for c in mixture_json(rec.mixture):
        _out(f"interest {c['interest']:>4}  weight {c['weight']:.3f}  budget {c['budget']}")
    for i, h in enumerate(rec.hits, start=1):
        doc = collection.docs.get(h.doc_id)
        title = (doc.title or doc.text).replace("\n", " ")[:80]
        mark = "*" if h.filled else " "
        _out(f"{i:>3}. {h.score:7.4f} [{h.interest:>4}]{mark} {h.doc_id:<12} {title}")
    return 0


def _eval_interests(args: argparse.Namespace) -> int:
    from twofold.search.interests_eval import InterestEvalJob, format_table, run_interest_eval

    job = InterestEvalJob(
        collection=Path(args.dir),
        dataset=Path(args.dataset),
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        users=args.users,
        seeds=args.seeds,
        budgets=args.budgets,
        m_min=args.m_min,
        m_max=args.m_max,
        min_relevant=args.min_relevant,
        params=mixture_params(args),
        out=Path(args.out) if args.out else None,
    )
    _out(format_table(run_interest_eval(job)))
    return 0


def add_interest_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rec = sub.add_parser(
        "recommend",
        help="multi-interest recommendations for a history (kNN-Embed)",
        description="Split the budget --k across the history's interest clusters "
        "(kNN-Embed) and search each cluster; history documents are never returned. "
        "Needs a collection built with --retrievers dense,interests.",
    )
    rec.add_argument("dir", help="collection directory")
    rec.add_argument(
        "--history", action="append", help="doc id(s) the user engaged with; repeat or comma list"
    )
    rec.add_argument("--text", action="append", help="a free-text history item; repeatable")
    rec.add_argument("--k", type=int, default=10, help="budget N (default 10)")
    rec.add_argument("--method", choices=["knn_embed", "single_vector"], default="knn_embed")
    rec.add_argument("--order", choices=["proportional", "score"], default="proportional")
    rec.add_argument("--json", action="store_true")
    add_mixture_args(rec)
    rec.set_defaults(func=_recommend)

    ev = sub.add_parser(
        "eval-interests",
        help="kNN-Embed vs single-vector on simulated multi-interest users",
        description="Simulated users join the relevant sets of 2..4 queries; half of each "
        "set is history, half targets. Reports recall@N, interest coverage@N and "
        "intra-list diversity@N for both methods at equal N.",
    )
    ev.add_argument("dir", help="collection directory (dense + interests)")
    ev.add_argument("--dataset", required=True, help="BEIR dataset directory")
    ev.add_argument("--splits", default="test", help="qrels splits to join, e.g. train,test")
    ev.add_argument("--users", type=int, default=200, help="simulated users per seed")
    ev.add_argument("--seeds", type=_int_list, default=(0, 1, 2), help="e.g. 0,1,2")
    ev.add_argument("--budgets", type=_int_list, default=(20, 50), help="N values, e.g. 20,50")
    ev.add_argument("--m-min", type=int, default=2, help="fewest queries per user")
    ev.add_argument("--m-max", type=int, default=4, help="most queries per user")
    ev.add_argument("--min-relevant", type=int, default=4, help="relevant docs a query needs")
    ev.add_argument("--out", help="write results JSON here")
    add_mixture_args(ev)
    ev.set_defaults(func=_eval_interests)
