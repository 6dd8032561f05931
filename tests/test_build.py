"""Collection builds: atomic publish, resume after a crash, bad input changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from twofold.core.errors import CollectionError, CorpusError, InputError, UnknownNameError
from twofold.core.types import Query
from twofold.indexing.build import build_collection, partial_dir
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.collection import Collection
from twofold.indexing.lucene import bm25

OPTS = BuildOptions(retrievers=("bm25",), progress=False)


def test_build_open_and_search(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "col"
    manifest = build_collection(tiny_corpus, out, OPTS)
    assert manifest.doc_count == 5 and list(manifest.sub_indexes) == ["bm25"]
    col = Collection(out)
    assert col.docs.get("d2").title == "Shells"
    assert col.docs.by_ordinal(4).doc_id == "d5"
    hits = col.index("bm25").search("cylindrical shells buckling", 3)
    assert hits[0][0] == "d2"
    assert not partial_dir(out).exists()


def test_interrupted_build_leaves_no_collection_and_resumes(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "col"
    real_build = bm25.build

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(bm25, "build", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        build_collection(tiny_corpus, out, OPTS)
    assert not out.exists()
    with pytest.raises(CollectionError):
        Collection(out)
    partial = partial_dir(out)
    docs_marker = partial / "docs" / ".complete.json"
    assert docs_marker.is_file()
    stamp = docs_marker.stat().st_mtime_ns

    monkeypatch.setattr(bm25, "build", real_build)
    build_collection(tiny_corpus, out, OPTS)
    assert docs_marker.exists() is False  # the partial dir was published
    assert (out / "docs" / ".complete.json").stat().st_mtime_ns == stamp  # docs were reused
    assert Collection(out).manifest.doc_count == 5


def test_bad_corpus_changes_nothing(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, OPTS)
    before = (out / "manifest.json").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(tiny_corpus.read_text() + "{broken\n")
    with pytest.raises(CorpusError, match=r"bad.jsonl:6"):
        build_collection(bad, out, OPTS)
    assert (out / "manifest.json").read_bytes() == before
    assert not partial_dir(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".col.v1",  # the version the link ``col`` points at
        "bad.jsonl",
        "col",
        "corpus.jsonl",
    ]


def test_skip_invalid_is_reported_in_manifest(tmp_path: Path, tiny_corpus: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(tiny_corpus.read_text() + "{broken\n" + json.dumps({"_id": "d1", "text": "x"}))
    opts = BuildOptions(retrievers=("bm25",), progress=False, skip_invalid=True)
    manifest = build_collection(bad, tmp_path / "col", opts)
    assert manifest.doc_count == 5 and manifest.corpus["skipped"] == 2


def test_rebuild_replaces_collection(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, OPTS)
    opts = BuildOptions(retrievers=("bm25",), progress=False, max_docs=2)
    build_collection(tiny_corpus, out, opts)
    col = Collection(out)
    assert len(col.docs) == 2 and col.index("bm25").search("wings", 5) == []
    # the first version was removed after the swap
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".col.v2"]


def test_refuses_to_overwrite_a_foreign_directory(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not a Twofold collection"):
        build_collection(tiny_corpus, out, OPTS)
    assert (out / "thesis.tex").read_text() == "precious"


def test_unknown_retriever_lists_known(tmp_path: Path, tiny_corpus: Path) -> None:
    opts = BuildOptions(retrievers=("bm26",), progress=False)
    with pytest.raises(UnknownNameError, match=r"known: .*bm25"):
        build_collection(tiny_corpus, tmp_path / "col", opts)
    assert not (tmp_path / "col").exists()


def test_unknown_doc_id_and_missing_subindex(tmp_path: Path, tiny_corpus: Path) -> None:
    build_collection(tiny_corpus, tmp_path / "col", OPTS)
    col = Collection(tmp_path / "col")
    with pytest.raises(Exception, match="unknown doc id 'nope'"):
        col.docs.get("nope")
    with pytest.raises(CollectionError, match="rebuild with --retrievers dense"):
        col.index("dense")
    assert Query("q", "x").text == "x"


def test_open_docstore_survives_republish(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, OPTS)
    opened = Collection(out)
    build_collection(
        tiny_corpus, out, BuildOptions(retrievers=("bm25",), progress=False, max_docs=1)
    )
    assert opened.docs.get("d4").title == "Wings"  # still the collection it opened
    assert len(Collection(out).docs) == 1


def test_docstore_iterates_across_blocks(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twofold.indexing import docstore

    build_collection(tiny_corpus, tmp_path / "col", OPTS)
    monkeypatch.setattr(docstore, "ITER_BLOCK", 2)
    docs = list(Collection(tmp_path / "col").docs)
    assert [d.doc_id for d in docs] == ["d1", "d2", "d3", "d4", "d5"]
    assert docs[4].title == "" and docs[4].text.startswith("turbulent")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_docs": -5}, "--max-docs"),
        ({"batch_size": 0}, "--batch-size"),
    ],
)
def test_bad_options_refused_before_any_write(options: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        BuildOptions(retrievers=("bm25",), **options)  # type: ignore[arg-type]


def test_bad_option_found_by_a_builder_keeps_the_doc_store(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise InputError("bad option")

    monkeypatch.setattr(bm25, "build", refuse)
    out = tmp_path / "col"
    with pytest.raises(InputError, match="bad option") as caught:
        build_collection(tiny_corpus, out, OPTS)
    assert "doc store finished" in str(caught.value) and "rerun the same" in str(caught.value)
    assert not out.exists() and (partial_dir(out) / "docs").is_dir()


def test_damaged_subindex_is_a_collection_error(tmp_path: Path, tiny_corpus: Path) -> None:
    build_collection(tiny_corpus, tmp_path / "col", OPTS)
    shutil.rmtree(tmp_path / "col" / "bm25")
    with pytest.raises(CollectionError, match="cannot open its 'bm25' index"):
        Collection(tmp_path / "col").index("bm25")


def test_publish_interrupted_between_renames_is_recovered(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    from twofold.indexing.build import recover_interrupted_publish

    out = tmp_path / "col"
    build_collection(tiny_corpus, out, OPTS)
    parked = tmp_path / ".col.old-12345"
    out.rename(parked)  # a crash right after publish's first rename leaves this
    recover_interrupted_publish(out)
    assert Collection(out).manifest.doc_count == 5 and not parked.exists()

    shutil.copytree(out, parked)  # a crash after the second rename: the new one is in place
    build_collection(
        tiny_corpus, out, BuildOptions(retrievers=("bm25",), progress=False, max_docs=2)
    )
    assert len(Collection(out).docs) == 2 and not parked.exists()
