"""Shared fixtures. Tests run offline: no model hub, weights from the model cache."""

from __future__ import annotations

import hashlib
import json
import os
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
