"""What every benchmark's result file carries (command, date, machine), and how it is
written: indented JSON to ``--out`` (its folder made) and to stdout."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def provenance() -> dict[str, str]:
    """The command line that ran (after the ``TWOFOLD_*`` environment variables it ran
    with), the UTC time and the machine (AMX or AVX512-BF16: whether bfloat16 runs natively), for a
    result file."""
    from twofold.models.device import cpu_has_amx, cpu_has_bf16_dot

    env = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("TWOFOLD_")]
    amx = ", AMX" if cpu_has_amx() else ", AVX512-BF16" if cpu_has_bf16_dot() else ""
    return {
        "command": " ".join([*env, "python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores{amx}, "
        f"Python {platform.python_version()}",
    }


def twofold(*argv: str, env: dict[str, str] | None = None) -> None:
    """``twofold *argv --quiet``: this interpreter's CLI, output discarded, failure raised."""
    exe = str(Path(sys.executable).parent / "twofold")
    subprocess.run([exe, *argv, "--quiet"], check=True, stdout=subprocess.DEVNULL, env=env)


def eval_summary(out: Path, pipelines: Sequence[str]) -> dict[str, Any]:
    """A ``twofold eval --out`` file, per pipeline: nDCG@10 on all queries and on the
    unseen-document ones (None when the dataset has no train split), and p50 ms."""
    report = json.loads(out.read_text())["pipelines"]
    summary: dict[str, Any] = {}
    for name in pipelines:
        unseen = report[name].get("unseen_documents", {}).get("ndcg@10")
        summary[name] = {
            "all": round(report[name]["ndcg@10"], 4),
            "unseen": None if unseen is None else round(unseen, 4),
            "p50_ms": report[name]["latency_ms"]["p50"],
        }
    return summary


def evaluated(
    collection: Path,
    dataset: Path,
    split: str,
    out: Path,
    pipelines: Sequence[str],
    *extra: str,
) -> dict[str, Any]:
    """``twofold eval`` of ``pipelines`` into ``out`` (skipped when ``out`` exists; ``extra``:
    more flags), summarized by :func:`eval_summary`."""
    if not out.is_file():
        argv = ["eval", str(collection), "--dataset", str(dataset), "--split", split]
        twofold(*argv, "--pipeline", ",".join(pipelines), *extra, "--out", str(out))
    return eval_summary(out, pipelines)


def trained_reranker(collection: Path, model: Path, flags: Sequence[str]) -> dict[str, Any]:
    """``twofold train reranker COLLECTION *flags --out MODEL`` unless ``model`` is trained
    already; the flags are recorded beside it (``MODEL.recipe``), and a model made with
    other flags is refused (one without that record is taken as it is). Returns the
    model card's steps, seconds, ``alpha`` and held-out fused -> reranked nDCG@10."""
    made_with = model.with_name(model.name + ".recipe")
    wanted = " ".join(flags)
    if made_with.is_file() and made_with.read_text().strip() != wanted:
        raise SystemExit(
            f"{model} was trained with `{made_with.read_text().strip()}`, not `{wanted}`: "
            "use another --work folder, or remove it and its eval files"
        )
    if not (model / "training_args.json").is_file():
        shutil.rmtree(model, ignore_errors=True)
        made_with.write_text(wanted + "\n")
        twofold("train", "reranker", str(collection), *flags, "--out", str(model))
    card = json.loads((model / "training_args.json").read_text())
    metrics = card["metrics"]
    return {
        "steps": card.get("steps"),
        "train_seconds": card.get("seconds"),
        "alpha": metrics.get("alpha"),
        # the trainer's held-out training queries, fused -> reranked at that alpha
        "heldout": [metrics.get("heldout_ndcg@10_fused"), metrics.get("heldout_ndcg@10_reranked")],
    }


def write_report(report: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(report, indent=2) + "\n"
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    sys.stdout.write(text)


def spread(ms: list[float], digits: int = 3) -> dict[str, float]:
    """p10, q1, median, q3 and p90 of the timings ``ms``, and their count."""
    a = np.asarray(ms)
    q = {f"p{p}": round(float(np.percentile(a, p)), digits) for p in (10, 25, 50, 75, 90)}
    return q | {"n": len(ms)}


def collection_args(ap: argparse.ArgumentParser) -> None:
    """The arguments of a benchmark over one collection and a BEIR split's queries."""
    ap.add_argument("collection", type=Path)
    ap.add_argument("--dataset", type=Path, required=True, help="BEIR dir for the queries")
    ap.add_argument("--split", default="test")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the queries")
    ap.add_argument("--max-queries", type=int, default=None)
