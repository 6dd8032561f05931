"""Load and reload open every sub-index at once (the interests index too), check each
one's document count against the doc store, and close what a reload replaces: the old
collection's Lucene readers, memory maps and file descriptors are released once the
last request holding it is done.

What is held is read from the kernel (``/proc/self/maps`` and ``/proc/self/fd``): after
a rebuild is published over a served collection, the old files are deleted but stay
mapped or open while anything holds them, and show as ``... (deleted)``."""

from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path

import pytest

from twofold.app.settings import Settings
from twofold.app.state import AppState, close_state, load_state, reload_collection, warm_up
from twofold.core.errors import CollectionError
from twofold.core.types import Query
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions, InterestOptions

ALL = ("bm25", "sparse", "dense", "interests")


def options(max_docs: int | None = None, retrievers: tuple[str, ...] = ALL) -> BuildOptions:
    return BuildOptions(
        retrievers=retrievers,
        max_docs=max_docs,
        max_length=64,
        interests=InterestOptions(n_clusters=2),
        device="cpu",
        progress=False,
    )


def held_deleted(marker: str) -> list[str]:
    """Deleted files whose path contains ``marker`` that this process still maps or has
    open (the JVM's Lucene maps included: it runs in this process)."""
    held = []
    with open("/proc/self/maps", encoding="utf-8") as fh:
        for line in fh:
            if marker in line and line.rstrip().endswith("(deleted)"):
                held.append(line.split(maxsplit=5)[-1].strip())
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if marker in target and target.endswith("(deleted)"):
            held.append(target)
    return sorted(set(held))


def wait_until_released(marker: str, limit_s: float = 60.0) -> list[str]:
    until = time.monotonic() + limit_s
    while True:
        gc.collect()
        held = held_deleted(marker)
        if not held or time.monotonic() > until:
            return held
        time.sleep(0.1)


def test_a_sub_index_from_another_build_is_refused_at_load_naming_it(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    five, four = tmp_path / "five", tmp_path / "four"
    build_collection(tiny_corpus, five, options(retrievers=("bm25",)))
    build_collection(tiny_corpus, four, options(max_docs=4, retrievers=("bm25",)))
    shutil.rmtree(five / "bm25")
    shutil.copytree(four / "bm25", five / "bm25")
    # file verification (``test_verify``) would refuse it first; here the count check
    with pytest.raises(CollectionError, match=r"'bm25' index holds 4 documents, the doc store 5"):
        load_state(Settings(collections=[five], warmup=False, verify="off"))


def test_reload_opens_everything_and_closes_the_replaced_collection(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cranfield"
    build_collection(tiny_corpus, out, options())
    state: AppState = load_state(Settings(collections=[out], warmup=False, search_threads=2))
    try:
        old = state.collection("cranfield")
        # opened at load, before any request: every sub-index and the interests retriever
        assert sorted(old.collection.opened()) == sorted(ALL)
        assert old.interests is not None
        state.queue.submit(warm_up, old).result()  # the JVM reads the index on a thread
        assert held_deleted(".cranfield.v1/") == []

        build_collection(tiny_corpus, out, options(max_docs=4))  # published over it
        held_before = held_deleted(".cranfield.v1/")
        # the old files are gone from disk but the served collection still holds them
        assert any("/bm25/lucene/" in p for p in held_before), held_before
        assert any(p.endswith(".npy (deleted)") for p in held_before), held_before

        with state.lease("cranfield") as leased:  # a request still running on the old one
            fresh = state.queue.submit(reload_collection, state, "cranfield").result()
            assert fresh is not leased and state.collection("cranfield") is fresh
            assert leased.retired
            # the old collection stays open (and answers) while a request holds it
            assert leased.pipeline("bm25").search(Query("q", "boundary layer"), 5).hits
            assert held_deleted(".cranfield.v1/")
        assert wait_until_released(".cranfield.v1/") == []
        with pytest.raises(CollectionError, match="closed"):
            old.collection.index("bm25")

        assert len(fresh.collection.docs) == 4 and sorted(fresh.collection.opened()) == sorted(ALL)
        ranking = state.queue.submit(
            fresh.pipeline("hybrid").search, Query("q", "boundary layer"), 5
        ).result()
        assert {h.doc_id for h in ranking.hits} <= {"d1", "d2", "d3", "d4"}
    finally:
        close_state(state)
