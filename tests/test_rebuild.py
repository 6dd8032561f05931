"""Rebuilding the dense sub-index of a published collection in place
(``indexing.rebuild``, used by ``optimize``'s dense step): the result equals a full build
with the new model, the other sub-indexes are hard links of the old files, and a
discarded or refused rebuild leaves the collection as it was."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.test_dense_model import WORDS, make_tiny_model
from twofold.core.errors import InputError
from twofold.core.types import Query
from twofold.indexing.build import build_collection, build_lock
from twofold.indexing.buildctx import BuildOptions, DenseOptions, InterestOptions
from twofold.indexing.collection import Collection
from twofold.indexing.rebuild import discard_rebuild, publish_rebuild, rebuild_dir, stage_rebuild
from twofold.indexing.verify import verify_collection
from twofold.search.pipeline import build_pipeline


def _corpus(path: Path) -> Path:
    rng = random.Random(3)
    docs = [
        {"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS) for _ in range(12))}
        for i in range(24)
    ]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _options(model: Path, precision: str = "auto") -> BuildOptions:
    return BuildOptions(
        retrievers=("bm25", "dense", "interests"),
        dense=DenseOptions(model=str(model), precision=precision),
        interests=InterestOptions(n_clusters=3),
        batch_size=8,
        progress=False,
    )


def _inodes(root: Path, sub: str) -> dict[str, int]:
    base = root.resolve() / sub
    return {str(p.relative_to(base)): p.stat().st_ino for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    corpus = _corpus(tmp_path / "corpus.jsonl")
    old = make_tiny_model(tmp_path / "old", hidden=16, seed=0)
    new = make_tiny_model(tmp_path / "new", hidden=16, seed=1)
    build_collection(corpus, tmp_path / "c", _options(old))
    return tmp_path / "c", corpus, old, new


def test_a_rebuilt_dense_equals_a_full_build_and_reuses_the_rest(
    built: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    out, corpus, _, new = built
    bm25_inodes = _inodes(out, "bm25")
    with build_lock(out):
        staged = stage_rebuild(out, "dense", {"model": str(new)}, progress=False)
        assert Collection(staged).has("dense")  # the staged copy opens before publishing
        publish_rebuild(out)
    assert not rebuild_dir(out).exists()
    assert _inodes(out, "bm25") == bm25_inodes  # hard links: bm25 was not rebuilt
    full = tmp_path / "full"
    build_collection(corpus, full, _options(new))
    rebuilt, fresh = Collection(out), Collection(full)
    for name in ("dense/vectors.npy", "interests/centroids.npy", "interests/assignments.npy"):
        assert np.array_equal(np.load(rebuilt.root / name), np.load(fresh.root / name))
    entry = rebuilt.manifest.sub_indexes["dense"]
    assert entry["encoder"]["sha256"] == fresh.manifest.sub_indexes["dense"]["encoder"]["sha256"]
    assert entry["model"] == str(out.absolute() / "dense" / "model")  # survives its source
    assert set(rebuilt.manifest.build["rebuilt"]) >= {"dense", "interests"}
    assert verify_collection(out).ok
    query = Query("q", " ".join(WORDS[:4]))
    ours = build_pipeline(rebuilt, "dense").search(query, 5)
    theirs = build_pipeline(fresh, "dense").search(query, 5)
    assert [h.doc_id for h in ours] == [h.doc_id for h in theirs]


def test_a_discarded_or_refused_rebuild_changes_nothing(
    built: tuple[Path, Path, Path, Path],
) -> None:
    out, _, _, new = built
    before = {sub: _inodes(out, sub) for sub in ("bm25", "dense", "interests")}
    manifest = (out / "manifest.json").read_text()
    with build_lock(out):
        stage_rebuild(out, "dense", {"model": str(new)}, progress=False)
        discard_rebuild(out)
        with pytest.raises(InputError, match="only dense can be rebuilt"):
            stage_rebuild(out, "bm25", {})
        with pytest.raises(InputError, match="--dense-model"):
            stage_rebuild(out, "dense", {"model": "no-such-model"})
    assert not rebuild_dir(out).exists()
    assert {sub: _inodes(out, sub) for sub in before} == before
    assert (out / "manifest.json").read_text() == manifest
    assert verify_collection(out).ok


def test_a_rebuild_reuses_vectors_only_from_the_same_encoder(
    built: tuple[Path, Path, Path, Path], tmp_path: Path
) -> None:
    """``ReuseVectors`` (what ``optimize`` hands the rebuild: the trainer's corpus
    vectors): with the new model's key, the staged vectors are exactly the ones given
    (scaled by 0.5 here, so encoding them again could not match); with a key of other
    settings, the corpus is encoded again."""
    from twofold.indexing.dense.shards import ReuseVectors, encoding_key
    from twofold.indexing.encoding import LocalExecutor
    from twofold.models.dense import DenseEncoder
    from twofold.models.registry import model_fingerprint

    out, corpus, _, new = built
    full = tmp_path / "full"
    build_collection(corpus, full, _options(new, "fp32"))  # the trainer encodes in fp32
    vectors = np.load(full / "dense" / "vectors.npy")
    encoder = DenseEncoder(str(new), max_length=_options(new).max_length)
    key = encoding_key(model_fingerprint(str(new))["sha256"], encoder)
    # the rebuild encodes in the precision the vectors were made in (``rebuild_changes``)
    changes = {"model": str(new), "precision": key["precision"]}
    other_precision = {**key, "precision": "bf16" if key["precision"] == "fp32" else "fp32"}
    for given, reused in ((key, True), ({**key, "max_length": 7}, False), (other_precision, False)):
        reuse = ReuseVectors(LocalExecutor("cpu", False), 0.5 * vectors, given)
        with build_lock(out):
            staged = stage_rebuild(out, "dense", changes, False, reuse)
            got = np.load(staged / "dense" / "vectors.npy")
            discard_rebuild(out)
        assert reuse.reused is reused
        assert np.array_equal(got, 0.5 * vectors if reused else vectors)
