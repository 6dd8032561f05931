"""Typed build options, checked before any encoding, and partial builds kept after a
late input error.

Real builds (BM25 on Lucene, a dense index with a tiny random BERT bi-encoder, FAISS
k-means interests) of the five-document corpus. A bad option given to ``twofold index
build`` fails with a message that names its flag: before anything is written where
the models tell (names, PQ ``m`` against the model's dimension), else right after the
doc store is written (against the document count), before any sub-index is built. An
input error found after the doc store or a sub-index was finished keeps the partial
build, and the rerun with the option fixed reuses what was finished."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.test_dense_model import make_tiny_model as make_dense_model
from twofold.app.cli import main
from twofold.core.errors import InputError
from twofold.indexing import build as build_module
from twofold.indexing.build import (
    COMPLETE,
    PartialBuildKept,
    build_collection,
    lock_path,
    partial_dir,
)
from twofold.indexing.buildctx import BuildOptions, DenseOptions, InterestOptions
from twofold.indexing.collection import Collection
from twofold.indexing.verify import verify_collection

DIM = 32  # the tiny dense model's hidden size


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dense_model(tmp_path_factory.mktemp("models") / "dense", hidden=DIM)


def _options(model: Path, clusters: int | None) -> BuildOptions:
    return BuildOptions(
        retrievers=("bm25", "dense", "interests"),
        dense=DenseOptions(model=str(model), index="flat"),
        interests=InterestOptions(n_clusters=clusters),
        max_length=32,
        batch_size=2,
        device="cpu",
        progress=False,
    )


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file under ``root``: a rebuilt file gets a new inode."""
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# flags -> (words of the error, whether the doc store was written before it)
BAD = {
    "unknown dense model": (
        ["--retrievers", "bm25,dense", "--dense-model", "minilm-l7"],
        "--dense-model 'minilm-l7' is neither a registered model",
        False,
    ),
    "sparse model dir missing": (
        ["--retrievers", "sparse", "--sparse-model", "/nonexistent/mlm"],
        "--sparse-model '/nonexistent/mlm' is neither a registered model",
        False,
    ),
    "pq m vs the model's dimension": (
        ["--retrievers", "dense", "--dense-index", "ivfpq", "--pq-m", "7"],
        f"--pq-m 7 must divide the dense model's dimension {DIM}",
        False,
    ),
    "negative min idf": (
        ["--retrievers", "sparse", "--query-min-idf", "-0.5"],
        "--query-min-idf must be >= 0",
        False,
    ),
    "hnsw m": (["--retrievers", "dense", "--hnsw-m", "1"], "--hnsw-m must be >= 2", False),
    "pq nbits": (
        ["--retrievers", "dense", "--pq-nbits", "20"],
        "--pq-nbits must be between 1 and 16",
        False,
    ),
    "nprobe above nlist": (
        ["--retrievers", "dense", "--ivf-nlist", "2", "--ivf-nprobe", "3"],
        "--ivf-nprobe 3 exceeds the --ivf-nlist 2 cells",
        False,
    ),
    "clusters above the doc count": (
        ["--retrievers", "bm25,dense,interests", "--clusters", "6"],
        "--clusters 6 is more than the 5 documents",
        True,
    ),
    "ivfpq over 5 docs": (
        ["--retrievers", "dense", "--dense-index", "ivfpq"],
        "IVF-PQ over 5 vectors cannot train 16-centroid codebooks (--pq-nbits 4)",
        True,
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_option_is_refused_before_encoding_naming_its_flag(
    case: str,
    dense_model: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags, words, after_docs = BAD[case]
    out = tmp_path / "col"
    argv = ["index", "build", str(tiny_corpus), "--out", str(out), "--quiet"]
    argv += ["--dense-model", str(dense_model), "--device", "cpu", "--max-length", "32"]
    assert main(argv + flags) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert words in err
    assert not out.exists() and not lock_path(out).exists()
    partial = partial_dir(out)
    if not after_docs:  # found before anything was written: nothing on disk
        assert not partial.exists()
        return
    # found right after the doc store: no sub-index was started (no encoder ran)
    assert sorted(p.name for p in partial.iterdir() if p.is_dir()) == ["docs"]
    assert "the partial build is kept" in err and "doc store finished" in err


def test_an_input_error_before_any_write_leaves_the_published_collection_alone(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, BuildOptions(progress=False, max_docs=2))
    before = _files(out.resolve())
    bad = BuildOptions(retrievers=("bm25", "dense"), dense=DenseOptions(model="nope"))
    with pytest.raises(InputError, match="--dense-model 'nope'"):
        build_collection(tiny_corpus, out, bad)
    assert not partial_dir(out).exists() and not lock_path(out).exists()
    assert _files(out.resolve()) == before and verify_collection(out).ok


def test_a_late_input_error_keeps_finished_subindexes_and_the_rerun_reuses_them(
    dense_model: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, BuildOptions(progress=False, max_docs=2))  # published
    published = _files(out.resolve())
    # Let --clusters 9 pass the check after the doc store, so that the interests builder
    # finds it (its own check: k-means cannot make 9 clusters of 5 documents), late:
    # after bm25 and dense finished.
    monkeypatch.setattr(build_module, "check_doc_count", lambda *args: None)
    with pytest.raises(PartialBuildKept) as caught:
        build_collection(tiny_corpus, out, _options(dense_model, clusters=9))
    message = str(caught.value)
    assert "n_clusters must be between 1 and the 5 documents, not 9" in message
    assert "(doc store, bm25, dense finished)" in message and "rerun the same" in message
    partial = partial_dir(out)
    assert caught.value.partial == partial
    assert (partial / "bm25" / COMPLETE).is_file() and (partial / "dense" / COMPLETE).is_file()
    assert not (partial / "interests" / COMPLETE).exists()
    assert _files(out.resolve()) == published  # the published collection is untouched
    kept = {name: _files(partial / name) for name in ("docs", "bm25", "dense")}

    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="twofold.indexing.build"):
        manifest = build_collection(tiny_corpus, out, _options(dense_model, clusters=2))
    assert "bm25: finished in the partial build; reused" in caplog.text
    assert "dense: finished in the partial build; reused" in caplog.text
    assert "building bm25" not in caplog.text and "building dense" not in caplog.text
    assert "building interests" in caplog.text
    for name, files in kept.items():  # the same files (inodes, mtimes), now published
        assert _files(out.resolve() / name) == files
    assert manifest.doc_count == 5 and manifest.sub_indexes["interests"]["n_clusters"] == 2
    assert not partial.exists() and verify_collection(out).ok
    assert Collection(out).index("interests").n_clusters == 2


def test_the_rerun_after_a_bad_cluster_count_reuses_the_doc_store(
    dense_model: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "col"
    with pytest.raises(PartialBuildKept, match="--clusters 6 is more than the 5 documents"):
        build_collection(tiny_corpus, out, _options(dense_model, clusters=6))
    docs = _files(partial_dir(out) / "docs")
    assert not (partial_dir(out) / "dense").exists()  # no encoder ran
    build_collection(tiny_corpus, out, _options(dense_model, clusters=3))
    assert _files(out.resolve() / "docs") == docs
    assert Collection(out).index("interests").n_clusters == 3


def test_the_build_help_names_the_new_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["index", "build", "--help"])
    text = capsys.readouterr().out
    for flag in ("--hnsw-m", "--ivf-nlist", "--pq-m", "--pq-nbits", "--query-min-idf"):
        assert flag in text
    assert "keeps the partial build" in " ".join(text.split())
