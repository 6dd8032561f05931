"""Shared fixtures. Tests run offline: no model hub, weights from the model cache."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from twofold.indexing.corpus import BeirDataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SAMPLE = ROOT / "data" / "cranfield"

CORPUS_SHA256 = {
    "scifact": "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6",
    "cranfield": "00b5d391bbfb0cdf35fa61826e0f07a480f62e6bc4fd2d5e6d4b19618ab697c1",
}


def shared_dataset(name: str) -> Path:
    """A dataset from ../shared/datasets, checked against its published sha256."""
    path = SHARED / name
    if not (path / "corpus.jsonl").is_file():
        pytest.fail(f"{path} is missing: tests expect ../shared/datasets beside the repo")
    digest = hashlib.sha256((path / "corpus.jsonl").read_bytes()).hexdigest()
    assert digest == CORPUS_SHA256[name], f"{name} corpus.jsonl has sha256 {digest}"
    return path


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return shared_dataset("scifact")


@pytest.fixture(scope="session")
def cranfield_dir() -> Path:
    return shared_dataset("cranfield")


TINY_DOCS = [
    {"_id": "d1", "title": "Heat transfer", "text": "laminar boundary layer heat transfer"},
    {"_id": "d2", "title": "Shells", "text": "buckling of thin cylindrical shells under pressure"},
    {"_id": "d3", "title": "Supersonic", "text": "supersonic flow over a flat plate with shocks"},
    {"_id": "d4", "title": "Wings", "text": "lift and drag of swept wings at low speed"},
    {"_id": "d5", "title": "", "text": "turbulent boundary layer skin friction measurements"},
]


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    return path


def write_subset(source: Path, dest: Path, n_queries: int, n_docs: int) -> None:
    """A documented subset of a BEIR dataset's test split, written as a BEIR directory:
    the first ``n_queries`` judged queries, the first ``n_docs`` documents plus every
    document judged for those queries."""
    data = BeirDataset(source)
    qrels = data.qrels("test")
    queries = data.queries("test", qrels)[:n_queries]
    judged = {d for q in queries for d in qrels[q.query_id]}
    (dest / "qrels").mkdir(parents=True)
    with (source / "corpus.jsonl").open() as src, (dest / "corpus.jsonl").open("w") as dst:
        for i, line in enumerate(src):
            if i < n_docs or json.loads(line)["_id"] in judged:
                dst.write(line)
    (dest / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q.query_id, "text": q.text}) + "\n" for q in queries)
    )
    rows = [f"{q.query_id}\t{d}\t{g}" for q in queries for d, g in qrels[q.query_id].items()]
    (dest / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows))


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus protocol server: ``milvus-lite server`` as its own process on a free
    127.0.0.1 port, with a fresh data directory; stopped at the end of the session."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    data = tmp_path_factory.mktemp("milvus")
    log = (data / "server.log").open("wb")
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data / "d")]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        until = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"milvus-lite server exited: {(data / 'server.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > until:
                    pytest.fail("milvus-lite server did not start listening in 60 s")
                time.sleep(0.2)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


BACKEND_RETRIEVERS = ("bm25", "sparse", "splade", "dense")
BACKEND_DOCS = 100  # the Cranfield sample's first 100 documents


@pytest.fixture(scope="session")
def backend_collections(
    tmp_path_factory: pytest.TempPathFactory, milvus_uri: str
) -> dict[str, Path]:
    """One collection (Cranfield sample, first ``BACKEND_DOCS`` docs, bm25 + sparse +
    splade + dense) per backend: ``embedded`` as built, and ``milvus``, the same build
    pushed into the session's milvus-lite server. Both directories are named
    ``cranfield``, so the API suite's expectations hold for either."""
    import shutil

    from twofold.indexing.build import build_collection
    from twofold.indexing.buildctx import BuildOptions
    from twofold.indexing.milvus_store import MilvusTarget, push_collection

    embedded = tmp_path_factory.mktemp("embedded") / "cranfield"
    options = BuildOptions(
        retrievers=BACKEND_RETRIEVERS, max_docs=BACKEND_DOCS, max_length=128, progress=False
    )
    build_collection(SAMPLE, embedded, options)
    milvus = tmp_path_factory.mktemp("milvus-backed") / "cranfield"
    shutil.copytree(embedded, milvus)
    push_collection(milvus, MilvusTarget(milvus_uri, "api_cranfield", batch_size=64), False)
    return {"embedded": embedded, "milvus": milvus}


FULL_RETRIEVERS = ("bm25", "sparse", "splade", "dense", "interests")
FULL_DOCS = 100


@pytest.fixture(scope="session")
def full_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real collection with every retriever: the first ``FULL_DOCS`` documents of
    the Cranfield sample, real models (splade-tiny, minilm-l6; 128 tokens a document),
    built once per run."""
    from twofold.indexing.build import build_collection
    from twofold.indexing.buildctx import BuildOptions

    out = tmp_path_factory.mktemp("full") / "cranfield-all"
    options = BuildOptions(
        retrievers=FULL_RETRIEVERS,
        max_docs=FULL_DOCS,
        max_length=128,
        device="cpu",
        progress=False,
    )
    build_collection(SAMPLE, out, options)
    return out
