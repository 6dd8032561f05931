"""``twofold``: one entry point, thin subcommands over library functions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from twofold.core.errors import TwofoldError

if TYPE_CHECKING:
    from twofold.indexing.buildctx import BuildOptions
    from twofold.indexing.milvus_store import MilvusTarget

Handler = Callable[[argparse.Namespace], int]
RERANKER_HELP = "cross-encoder directory (HF *ForSequenceClassification) for +rerank pipelines"


def _models_fetch(args: argparse.Namespace) -> int:
    from twofold.models.registry import MODELS, fetch

    for name in args.names or MODELS.names():
        print(f"{name}: {fetch(name)}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from twofold.models.registry import MODELS

    for name in MODELS.names():
        spec = MODELS.get(name)
        state = "fetched" if spec.is_fetched() else "not fetched"
        print(f"{name:<14}{spec.kind:<7}{state:<13}{spec.description}")
    return 0


def _build_options(args: argparse.Namespace) -> BuildOptions:
    """``twofold index build``'s flags as typed options (each checked where it is made)."""
    from twofold.indexing.buildctx import (
        BuildOptions,
        DenseOptions,
        ExecutorOptions,
        InterestOptions,
        SparseOptions,
    )
    from twofold.indexing.corpus import CorpusFormat

    def comma_list(value: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in value.split(",") if v.strip())

    shared = {
        "top_k": args.prune_top_k,
        "max_ratio": args.prune_max_ratio,
        "scale": args.quant_scale,
        "engine": args.sparse_engine,
        "precision": args.precision,
        **({} if args.sparse_engines is None else {"engines": comma_list(args.sparse_engines)}),
        **({} if args.shard_size is None else {"shard_size": args.shard_size}),
    }
    return BuildOptions(
        retrievers=comma_list(args.retrievers),
        corpus_format=CorpusFormat(
            args.format, args.id_field, args.title_field, args.text_field, args.tsv_header
        ),
        skip_invalid=args.skip_invalid,
        max_docs=args.max_docs,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_length,
        progress=not args.quiet,
        sparse=SparseOptions(model=args.sparse_model, query_min_idf=args.query_min_idf, **shared),
        splade=SparseOptions(model=args.splade_model, **shared),
        dense=DenseOptions(
            model=args.dense_model,
            index=args.dense_index,
            hnsw_m=args.hnsw_m,
            hnsw_ef_construction=args.hnsw_ef_construction,
            hnsw_ef_search=args.hnsw_ef_search,
            ivf_nlist=args.ivf_nlist,
            ivf_nprobe=args.ivf_nprobe,
            pq_m=args.pq_m,
            pq_nbits=args.pq_nbits,
            refine_k_factor=args.refine_k_factor,
            precision=args.precision,
            **({} if args.shard_size is None else {"shard_size": args.shard_size}),
        ),
        interests=InterestOptions(n_clusters=args.clusters),
        executor=ExecutorOptions(args.executor, args.ray_address, args.ray_actors),
    )


def _index_build(args: argparse.Namespace) -> int:
    from twofold.indexing.build import build_collection

    options = _build_options(args)
    manifest = build_collection(Path(args.corpus), Path(args.out), options, _milvus_target(args))
    skipped = manifest.corpus.get("skipped", 0)
    print(
        f"built {args.out}: {manifest.doc_count} documents, "
        f"retrievers {', '.join(manifest.sub_indexes)}"
        + (f", {skipped} invalid lines skipped" if skipped else "")
    )
    return 0


def _index_verify(args: argparse.Namespace) -> int:
    from twofold.indexing.verify import verify_collection

    report = verify_collection(Path(args.dir), "sizes" if args.sizes_only else "sha256")
    for problem in report.problems:
        print(f"FAIL {problem}")
    what = "sizes" if args.sizes_only else "sizes and sha256"
    if report.ok:
        print(f"ok: {report.checked} files match the manifest's {what}")
        return 0
    print(f"{args.dir}: {len(report.problems)} problems ({report.checked} files checked)")
    return 1


def _index_inspect(args: argparse.Namespace) -> int:
    from twofold.indexing.manifest import read_manifest

    m = read_manifest(Path(args.dir))
    if args.json:
        print(m.to_json(), end="")
        return 0
    print(f"collection   {args.dir}")
    print(f"format       {m.kind} v{m.format_version}")
    print(f"documents    {m.doc_count}")
    print(f"corpus       {m.corpus.get('path')} ({m.corpus.get('skipped', 0)} lines skipped)")
    print(
        f"built        {m.build.get('created')} in {m.build.get('seconds')} s "
        f"on {m.build.get('device')}, twofold {m.build.get('twofold')}"
    )
    for name, entry in m.sub_indexes.items():
        details = ", ".join(f"{k}={v}" for k, v in sorted(entry.items()) if not isinstance(v, dict))
        print(f"  {name:<10} {details}")
        for key, value in sorted(entry.items()):
            if isinstance(value, dict):
                print(f"  {'':<10} {key}: {json.dumps(value, sort_keys=True)}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from twofold.indexing.collection import Collection
    from twofold.search.jobs import format_hits, ranking_json, search_text

    collection = Collection(Path(args.dir))
    ranking = search_text(collection, args.query, args.pipeline, args.k, args.reranker)
    if not args.explain:
        if args.json:
            print(json.dumps(ranking_json(collection, ranking), indent=2))
        else:
            print(format_hits(collection, ranking))
        return 0
    from twofold.search.pipeline import pipeline_retrievers
    from twofold.search.sparse import SPARSE_RETRIEVERS, explain_ranking, format_explanation

    used = [r for r in pipeline_retrievers(collection, args.pipeline) if r in SPARSE_RETRIEVERS]
    explained = explain_ranking(collection, args.query, ranking, used)
    if args.json:
        rows = ranking_json(collection, ranking)
        for row in rows:
            row["explain"] = {
                name: [c.to_json() for c in terms]
                for name, terms in explained[str(row["doc_id"])].items()
            }
        print(json.dumps(rows, indent=2))
        return 0
    for line, hit in zip(format_hits(collection, ranking).splitlines(), ranking, strict=False):
        print(line)
        for name, terms in explained.get(hit.doc_id, {}).items():
            print(f"       {name}: {format_explanation(terms)}")
    if not any(explained.values()):
        print("(--explain covers the sparse and splade retrievers of a pipeline)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from twofold.search.jobs import EvalJob, parse_pipelines, run_eval

    job = EvalJob(
        collection=Path(args.dir),
        dataset=Path(args.dataset),
        split=args.split,
        pipelines=parse_pipelines(args.pipeline or ["bm25"]),
        k=args.k,
        out=Path(args.out) if args.out else None,
        runs=Path(args.runs) if args.runs else None,
        max_queries=args.max_queries,
        progress=not args.quiet,
        reranker=args.reranker,
        sparse_engine=args.sparse_engine,
        no_hits=args.no_hits,
    )
    print(run_eval(job).table())
    return 0


def _milvus_target(args: argparse.Namespace) -> MilvusTarget | None:
    from twofold.core.errors import InputError
    from twofold.indexing.milvus_store import MilvusTarget

    if args.backend == "local":
        return None
    if not args.milvus_uri:
        raise InputError("--backend milvus needs --milvus-uri URI (or $TWOFOLD_MILVUS_URI)")
    return MilvusTarget(args.milvus_uri, args.milvus_collection, args.milvus_dense_index)


def _add_build(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "build",
        help="build a collection from a corpus",
        description="Build a collection (doc store + sub-indexes) from a corpus "
        "file or a BEIR dataset directory. Every option is checked before any "
        "encoding starts. Interrupted builds resume when rerun with the same arguments. "
        "Bad input changes nothing at --out; found after the documents were read (e.g. "
        "--clusters above the document count), it keeps the partial build, and a rerun "
        "with the option fixed reuses the doc store and the finished sub-indexes.",
    )
    p.add_argument("corpus", help="corpus file (.jsonl BEIR/jsonl, .tsv) or BEIR dataset dir")
    p.add_argument("--out", required=True, help="collection directory to publish")
    p.add_argument(
        "--retrievers",
        default="bm25",
        help="comma list of bm25,sparse,splade,dense,interests (default: bm25)",
    )
    p.add_argument("--format", default="auto", choices=["auto", "beir", "jsonl", "tsv"])
    p.add_argument("--id-field", default="_id", help="jsonl: id field (default _id)")
    p.add_argument("--title-field", default="title", help="jsonl: title field (default title)")
    p.add_argument("--text-field", default="text", help="jsonl: text field (default text)")
    p.add_argument("--tsv-header", action="store_true", help="tsv: skip the first line")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip malformed lines and count them in the report instead of failing",
    )
    p.add_argument("--max-docs", type=int, default=None, help="index only the first N documents")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="of the document encoders (dense, and the masked LM of sparse and splade): "
        "auto is bfloat16 on a CPU with AMX or a CUDA GPU that supports it (on AMX dense "
        "encodes about 3x and splade-tiny about 2x faster, nDCG@10 within 0.002), dense "
        "in bfloat16 and sparse/splade in float32 (behind an exact bfloat16 bound) on a CPU "
        "with AVX512-BF16 only, and float32 elsewhere; fp32 keeps the output of a float32 "
        "build. The environment variable "
        "TWOFOLD_PRECISION=fp32|bf16 decides auto. Queries do not follow this flag: the "
        "service encodes them in what auto picks where it runs (default: auto)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="encoder batch size")
    p.add_argument("--max-length", type=int, default=256, help="encoder tokens per document")
    p.add_argument(
        "--sparse-model",
        default="splade-tiny",
        help="MLM document encoder of the inference-free index (name or directory)",
    )
    p.add_argument("--splade-model", default="splade-tiny", help="siamese SPLADE model")
    p.add_argument("--dense-model", default="minilm-l6", help="dense bi-encoder model")
    p.add_argument(
        "--dense-index",
        default="auto",
        choices=["auto", "flat", "hnsw", "ivfpq"],
        help="dense: FAISS index (auto: flat below 100,000 docs, hnsw below 2M, ivfpq above)",
    )
    _add_dense_index_flags(p)
    p.add_argument(
        "--clusters",
        type=int,
        default=None,
        help="kNN-Embed interest clusters, 1 to the document count (default round(sqrt(n)))",
    )
    p.add_argument(
        "--prune-top-k", type=int, default=None, help="sparse/splade: keep k terms per doc"
    )
    p.add_argument(
        "--prune-max-ratio",
        type=float,
        default=None,
        help="sparse/splade: drop doc weights below RATIO * the doc's max (0 <= RATIO < 1)",
    )
    p.add_argument(
        "--quant-scale",
        type=float,
        default=100.0,
        help="sparse/splade: Lucene impacts are round(w * SCALE) (default 100)",
    )
    p.add_argument(
        "--query-min-idf",
        type=float,
        default=0.0,
        help="sparse (inference-free): drop query tokens with idf below this, >= 0 "
        "(default 0: exact)",
    )
    p.add_argument(
        "--sparse-engine",
        default=None,
        choices=["native", "lucene", "seismic"],
        help="sparse/splade: engine the retrievers use by default (default: native below "
        "1,000,000 documents, lucene from there on: the faster by measurement)",
    )
    p.add_argument(
        "--sparse-engines",
        default=None,
        help="sparse/splade: engines built beside exact native, comma list of lucene,seismic "
        "(default both; leaving lucene out skips the impact export)",
    )
    p.add_argument(
        "--backend",
        default="local",
        choices=["local", "milvus"],
        help="where sparse/splade/dense vectors live: local files (default) or Milvus "
        "(bm25 stays on local Lucene)",
    )
    p.add_argument(
        "--milvus-uri",
        default=os.environ.get("TWOFOLD_MILVUS_URI"),
        help="Milvus server, e.g. http://127.0.0.1:19530 (default $TWOFOLD_MILVUS_URI)",
    )
    p.add_argument(
        "--milvus-collection", default=None, help="Milvus collection (default twofold_<out>)"
    )
    p.add_argument("--milvus-dense-index", default="hnsw", choices=["hnsw", "ivf_flat"])
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="where sparse/splade/dense documents are encoded: this process (default) or "
        "Ray Data actors on a Ray cluster (GPU actors when it has GPUs; same shards)",
    )
    p.add_argument("--ray-address", help="Ray cluster to join (default $RAY_ADDRESS, else local)")
    p.add_argument("--ray-actors", type=int, help="ray: encoder actors (default: as many as fit)")
    p.add_argument(
        "--shard-size",
        type=int,
        help="sparse/splade/dense: documents per resumable shard (default 2048, dense 8192)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_index_build)


def _add_dense_index_flags(p: argparse.ArgumentParser) -> None:
    """HNSW and IVF-PQ parameters of the dense index (``DenseOptions``)."""
    flags: list[tuple[str, int | None, str]] = [
        ("--hnsw-m", 32, "hnsw: links per node, M (default 32)"),
        ("--hnsw-ef-construction", 80, "hnsw: efConstruction (default 80)"),
        ("--hnsw-ef-search", 128, "hnsw: efSearch (default 128)"),
        ("--ivf-nlist", None, "ivfpq: IVF cells (default about 4 sqrt(n), >= 39 docs a cell)"),
        ("--ivf-nprobe", None, "ivfpq: cells visited per query (default min(nlist, 16))"),
        (
            "--pq-m",
            None,
            "ivfpq: PQ sub-quantizers; must divide the model's dimension "
            "(default: the divisor nearest dim/8)",
        ),
        ("--pq-nbits", None, "ivfpq: bits per PQ code, 1-16 (default 8, 4 below 9,984 docs)"),
        ("--refine-k-factor", 8, "ivfpq: exact rescoring of factor * k candidates (default 8)"),
    ]
    for flag, default, text in flags:
        p.add_argument(flag, type=int, default=default, help=f"dense {text}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twofold",
        description="Learned sparse + dense retrieval: build collections, "
        "search them, evaluate them on BEIR data, serve them over HTTP.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="model cache").add_subparsers(
        dest="action", required=True
    )
    fetch = models.add_parser("fetch", help="put real weights into the model cache (verified)")
    fetch.add_argument("names", nargs="*", help="models to fetch (default: all registered)")
    fetch.set_defaults(func=_models_fetch)
    models.add_parser("list", help="registered models").set_defaults(func=_models_list)

    index = sub.add_parser("index", help="build and inspect collections").add_subparsers(
        dest="action", required=True
    )
    _add_build(index)
    inspect = index.add_parser("inspect", help="print a collection's manifest")
    inspect.add_argument("dir", help="collection directory")
    inspect.add_argument("--json", action="store_true", help="print the raw manifest")
    inspect.set_defaults(func=_index_inspect)
    verify = index.add_parser(
        "verify", help="check every file against the sizes and sha256 in the manifest"
    )
    verify.add_argument("dir", help="collection directory")
    verify.add_argument("--sizes-only", action="store_true", help="sizes only (fast)")
    verify.set_defaults(func=_index_verify)

    search = sub.add_parser(
        "search",
        help="search a collection",
        description="Run one query through a named pipeline and print the ranked hits.",
    )
    search.add_argument("dir", help="collection directory (made by `twofold index build`)")
    search.add_argument("query", help="query text")
    search.add_argument(
        "--pipeline",
        default="bm25",
        help="bm25, sparse, splade, dense, hybrid, hybrid-rrf, hybrid+rerank, bm25+rerank; "
        "on a Milvus-backed collection also milvus-rrf, milvus-weighted (fused by Milvus) "
        "(default bm25; the collection must have the retrievers it uses)",
    )
    search.add_argument("--k", type=int, default=10, help="hits to print, 1-1000 (default 10)")
    search.add_argument("--json", action="store_true", help="print hits as JSON")
    search.add_argument("--reranker", help=RERANKER_HELP)
    search.add_argument(
        "--explain",
        action="store_true",
        help="per hit, the query terms and their score contributions in the sparse/splade index",
    )
    search.set_defaults(func=_search)

    ev = sub.add_parser(
        "eval",
        help="evaluate pipelines on a BEIR dataset",
        description="Run named pipelines over a BEIR split and report nDCG@10, "
        "recall@100, MRR@10 and per-query latency. A judged query with no hits scores 0 "
        "and counts in the means (--no-hits zero), or is left out of them as BEIR does "
        "(--no-hits skip); the report says which, and how many such queries there were.",
    )
    ev.add_argument("dir", help="collection directory")
    ev.add_argument("--dataset", required=True, help="BEIR dataset directory")
    ev.add_argument("--split", default="test", help="qrels split to evaluate (default test)")
    ev.add_argument("--pipeline", action="append", help="pipeline name(s); repeat or comma list")
    ev.add_argument("--k", type=int, default=100, help="hits per query (default 100)")
    ev.add_argument("--out", help="write results JSON here")
    ev.add_argument("--runs", help="write a TREC run file per pipeline into this directory")
    ev.add_argument("--reranker", help=RERANKER_HELP)
    ev.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N")
    ev.add_argument(
        "--sparse-engine",
        choices=["native", "lucene", "seismic"],
        help="engine of the sparse/splade retrievers (default: the collection's build choice)",
    )
    ev.add_argument(
        "--no-hits",
        default="zero",
        choices=["zero", "skip"],
        help="judged queries with no hits: zero = score 0, averaged over every judged query "
        "(default); skip = left out of the means (BEIR's convention: pytrec_eval scores only "
        "the queries in the run)",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=_eval)
    from twofold.app.cli_interests import add_interest_commands

    add_interest_commands(sub)  # recommend, eval-interests (kNN-Embed)
    from twofold.app.cli_train import add_train_commands

    add_train_commands(sub)  # train sparse (IDF-aware FLOPS), train reranker (Margin-MSE)
    from twofold.app.cli_service import add_service_commands

    add_service_commands(sub)  # serve, tune-fusion
    from twofold.app.cli_optimize import add_optimize_command

    add_optimize_command(sub)  # optimize: fusion, adapter, reranker, held-out checked
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our own bars cover long jobs; transformers' per-load "Loading weights" bar is noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if args.command != "index":
        # Query time mixes torch's and FAISS's OpenMP pools in one process; spinning idle
        # threads of one starve the other (dense retrieval 295 ms instead of 18 ms after a
        # SPLADE query on 2 cores). Must be set before either library loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except TwofoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave cannot be read or written
        if isinstance(exc, BrokenPipeError):  # e.g. `twofold search ... | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
