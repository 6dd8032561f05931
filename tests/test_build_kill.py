"""``kill -9`` of ``twofold index build`` at several points (a log line, or a seeded
delay): the collection already at ``--out`` stays whole (verify passes), and a rerun
gives the same search results, scores included, as an uninterrupted build.

The builds are real CLI processes (BM25 on Lucene + a dense index with a tiny random
BERT bi-encoder) over the five-document corpus; each is killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.test_dense_model import make_tiny_model as make_dense_model
from twofold.core.types import Query
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, DenseOptions
from twofold.indexing.collection import Collection
from twofold.indexing.manifest import read_manifest
from twofold.indexing.verify import verify_collection
from twofold.search.pipeline import build_pipeline

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["boundary layer heat", "thin shells buckling", "supersonic flow wings"]
SEED = 20250611
# where to kill: after a log line of the build (the kill lands a little later), or after
# a delay drawn from ``random.Random(SEED)``
POINTS = ["building bm25", "building dense", "publishing", "delay"]


def options(model: Path, max_docs: int | None = None) -> BuildOptions:
    return BuildOptions(
        retrievers=("bm25", "dense"),
        dense=DenseOptions(model=str(model)),
        max_length=32,
        batch_size=2,
        device="cpu",
        max_docs=max_docs,
        progress=False,
    )


def results(path: Path) -> dict[str, list[list[tuple[str, float]]]]:
    col = Collection(path)
    try:
        col.open_all()
        return {
            name: [
                [
                    (h.doc_id, round(h.score, 6))
                    for h in build_pipeline(col, name).search(Query("q", q), 5).hits
                ]
                for q in QUERIES
            ]
            for name in ("bm25", "dense")
        }
    finally:
        col.close()


def killed_build(corpus: Path, out: Path, model: Path, point: str, delay: float) -> str:
    """Run the CLI build and SIGKILL it at ``point``; what it had logged."""
    cmd = [sys.executable, "-m", "twofold.app.cli", "index", "build", str(corpus)]
    cmd += ["--out", str(out), "--retrievers", "bm25,dense", "--dense-model", str(model)]
    cmd += ["--max-length", "32", "--batch-size", "2", "--device", "cpu", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stderr is not None
    lines: list[str] = []
    if point == "delay":
        threading.Timer(delay, proc.send_signal, (signal.SIGKILL,)).start()
    for line in proc.stderr:
        lines.append(line)
        if point != "delay" and point in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=300)
    log = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, log
    return log


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:  # type: ignore[type-arg]
    import json

    from tests.conftest import TINY_DOCS

    root = tmp_path_factory.mktemp("kill")
    model = make_dense_model(root / "model")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    build_collection(corpus, root / "reference", options(model))
    return corpus, model, results(root / "reference")


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_build_leaves_the_old_collection_and_a_rerun_matches(
    setup: tuple[Path, Path, dict],
    tmp_path: Path,
    point: str,  # type: ignore[type-arg]
) -> None:
    corpus, model, reference = setup
    out = tmp_path / "col"
    build_collection(corpus, out, options(model, max_docs=2))  # the old collection
    old = results(out)
    delay = random.Random(f"{SEED}-{point}").uniform(0.5, 6.0)
    t0 = time.monotonic()
    log = killed_build(corpus, out, model, point, delay)
    # whole, whichever it is: the old one, or the new one when the kill came after the swap
    report = verify_collection(out)
    assert report.ok, (report.problems, log)
    count = read_manifest(out).doc_count
    assert count in (2, 5), log
    assert results(out) == (old if count == 2 else reference)
    if point in ("building bm25", "building dense"):
        assert count == 2, f"killed at {point!r} after {time.monotonic() - t0:.1f}s: {log}"
    build_collection(corpus, out, options(model))  # the rerun
    assert results(out) == reference
    assert verify_collection(out).ok
    # no partial directory, lock or stray version left: the link and its one version
    assert sorted(p.name for p in tmp_path.iterdir()) == [os.readlink(out), "col"]
