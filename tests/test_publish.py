"""Publishing keeps the collection's name present: ``--out`` is a link to a version
``.NAME.vN`` swapped atomically; the old version is removed after the swap.

Two observers, both real: a thread polling ``os.path.exists`` while builds republish,
and an audit hook (``sys.addaudithook``) that checks the name at every rename, link,
unlink and tree removal the build makes, so the check does not rest on a thread being
scheduled inside a short window."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.collection import Collection
from twofold.indexing.verify import verify_collection

WATCHED: list[Path] = []  # the names the audit hook checks (empty: it does nothing)
ABSENT: list[str] = []
EVENTS = {"os.rename", "os.symlink", "os.remove", "shutil.rmtree", "os.rmdir"}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in EVENTS:
        for out in WATCHED:
            if not os.path.exists(out / "manifest.json"):
                ABSENT.append(f"{event}{args[:2]}")


sys.addaudithook(_audit)  # process-wide and permanent, idle while WATCHED is empty


def options(max_docs: int | None) -> BuildOptions:
    return BuildOptions(retrievers=("bm25",), progress=False, max_docs=max_docs)


def test_the_name_resolves_throughout_a_republish(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, options(None))
    polls: list[bool] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append(os.path.exists(out / "manifest.json"))

    poller = threading.Thread(target=poll)
    poller.start()
    WATCHED.append(out)
    try:
        for max_docs in (2, 3, None, 1):
            build_collection(tiny_corpus, out, options(max_docs))
            assert len(Collection(out).docs) == (max_docs or 5)
    finally:
        WATCHED.clear()
        stop.set()
        poller.join()
    assert ABSENT == [], ABSENT
    assert polls and all(polls), f"{polls.count(False)} of {len(polls)} polls found no {out}"
    # the old versions are gone: the link and the one version it points at remain
    assert out.is_symlink() and os.readlink(out) == ".col.v5"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".col.v5", "col", "corpus.jsonl"]
    assert verify_collection(out).ok


def test_a_collection_from_before_links_becomes_a_link(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, options(None))
    version = out.resolve()
    out.unlink()
    version.rename(out)  # a plain directory, as published before links were used
    build_collection(tiny_corpus, out, options(2))
    assert out.is_symlink() and len(Collection(out).docs) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".col.v1", "col", "corpus.jsonl"]


def test_an_opened_collection_reads_the_version_it_resolved(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    out = tmp_path / "col"
    build_collection(tiny_corpus, out, options(None))
    opened = Collection(out)
    opened.open_all()  # what the service does at load
    build_collection(tiny_corpus, out, options(1))
    assert opened.root.name == ".col.v1" and Collection(out).root.name == ".col.v2"
    assert opened.name == "col" and len(opened.docs) == 5
    assert opened.index("bm25").search("cylindrical shells buckling", 3)[0][0] == "d2"
    opened.close()
