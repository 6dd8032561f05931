"""Self-contained collections: the query-side models (dense bi-encoder, siamese SPLADE)
are hard-linked (same filesystem) or copied (another one) into the collection, and the
manifest's model references are absolute. A collection keeps answering, with the same
rankings, from another working directory after its model folders were deleted."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.test_dense_model import make_tiny_model as make_dense_model
from tests.test_sparse_unit import make_tiny_model as make_mlm
from twofold.core.types import Query
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, DenseOptions, SparseOptions
from twofold.indexing.bundle import bundle_model
from twofold.indexing.collection import Collection
from twofold.indexing.verify import verify_collection
from twofold.search.pipeline import build_pipeline

QUERIES = ["boundary layer heat", "thin shells buckling", "supersonic flow wings"]


def rankings(path: Path) -> dict[str, list[list[str]]]:
    col = Collection(path)
    try:
        col.open_all()
        return {
            name: [build_pipeline(col, name).search(Query("q", q), 5).doc_ids() for q in QUERIES]
            for name in ("dense", "splade")
        }
    finally:
        col.close()


def test_a_collection_answers_after_its_models_were_deleted_from_another_cwd(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    make_dense_model(work / "models" / "dense")
    make_mlm(work / "models" / "mlm", with_idf=False)
    monkeypatch.chdir(work)
    options = BuildOptions(
        retrievers=("bm25", "splade", "dense"),
        dense=DenseOptions(model="models/dense"),  # relative to the build's working directory
        splade=SparseOptions(model="models/mlm"),
        max_length=32,
        batch_size=2,
        device="cpu",
        progress=False,
    )
    manifest = build_collection(tiny_corpus, Path("col"), options)
    col = work / "col"
    for name, model in (("dense", "dense"), ("splade", "mlm")):
        entry = manifest.sub_indexes[name]
        assert entry["encoder"]["name"] == str(work / "models" / model)  # absolute
        files = entry["model_files"]
        assert files["how"] == "hardlink" and files["source"] == str(work / "models" / model)
        weights = col / name / "model" / "model.safetensors"
        source = work / "models" / model / "model.safetensors"
        assert weights.stat().st_ino == source.stat().st_ino  # linked: no extra disk
    assert manifest.sub_indexes["dense"]["model"] == str(work / "models" / "dense")
    before = rankings(col)
    assert all(any(r) for r in before.values())

    shutil.rmtree(work / "models")  # the model folders are gone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert rankings(col) == before
    assert verify_collection(col).ok


def test_a_model_on_another_filesystem_is_copied(tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the tmp dir")
    model = make_mlm(tmp_path / "mlm", with_idf=False)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        files = bundle_model(str(model), Path(other))
        assert files["how"] == "copy"
        copied = Path(other) / "model" / "model.safetensors"
        assert copied.read_bytes() == (model / "model.safetensors").read_bytes()
        assert copied.stat().st_ino != (model / "model.safetensors").stat().st_ino
