"""Build a collection: doc store, then each sub-index, then the manifest, then publish.

The build happens in a hidden sibling ``.NAME.partial`` of the output directory. A
crash leaves it there and the next run resumes: the doc store is kept when the corpus
and its options are the same, each finished sub-index (it marks itself complete) when
its own options are the same (``BuildOptions.subindex_fingerprint``, recorded in the
resume state), and builders that shard their work keep finished shards.

Options are checked before anything is written (``indexing.preflight``), and against
the document count right after the doc store is written. Bad input found before the
doc store was written removes the partial directory, so nothing is left on disk; found
later, the partial build is kept and the error says what a rerun with the option fixed
reuses. Either way the published collection at the output path is not touched.
Publishing (``indexing.publish``) fsyncs the partial directory, renames it to a version
``.NAME.vN`` and swaps the link ``NAME`` over to it atomically: the name always
resolves, to a whole collection.

One build at a time per output: a build holds an exclusive ``fcntl`` lock on
``.NAME.lock`` beside the partial directory from before it touches anything until it
has published, and a second build into the same ``--out`` is refused at once. The
kernel drops the lock when its process dies (``kill -9`` included), so a crash never
leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twofold import __version__
from twofold.core.errors import InputError, TwofoldError
from twofold.indexing.buildctx import RETRIEVER_NAMES, BuildContext, BuildOptions
from twofold.indexing.corpus import ReadReport, read_corpus, resolve_corpus_path
from twofold.indexing.docstore import DocStore, DocStoreWriter
from twofold.indexing.encoding import Executor, LocalExecutor
from twofold.indexing.manifest import MANIFEST, Manifest, write_manifest
from twofold.indexing.milvus_store import (
    MilvusTarget,
    check_milvus_target,
    drop_local_vectors,
    push_to_milvus,
)
from twofold.indexing.preflight import check_doc_count, check_options
from twofold.indexing.publish import publish as publish_version
from twofold.indexing.publish import recover_interrupted_publish
from twofold.indexing.subindexes import SUBINDEXES
from twofold.indexing.verify import file_table
from twofold.models.device import resolve_device

log = logging.getLogger(__name__)
STATE = ".build.json"
ENCODED = ("sparse", "splade", "dense")  # the sub-indexes whose encoding an executor runs
COMPLETE = ".complete.json"


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


class BuildLocked(InputError):
    """Another build into the same output directory is running."""


class PartialBuildKept(InputError):
    """Bad input found after the doc store was written: the partial build ``partial``
    is kept, and a rerun with the option fixed reuses ``kept`` (the doc store, finished
    sub-indexes)."""

    def __init__(self, cause: InputError, partial: Path, kept: list[str]) -> None:
        self.partial, self.kept = partial, kept
        super().__init__(
            f"{cause}\nthe partial build is kept in {partial} ({', '.join(kept)} finished); "
            "rerun the same `twofold index build` command with the option fixed: it resumes "
            "there and reuses what is finished (a sub-index whose own options changed is "
            "built again; a change to the corpus or its options starts over)"
        )


BUILD_HINT = "wait for it to finish, or build into another --out"


def _lock(path: Path, out: Path, hint: str) -> int:
    """An fd holding ``flock(LOCK_EX)`` on the file now at ``path``. A holder unlinks
    the file before it lets go, so a lock won on an unlinked file is retried."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise BuildLocked(
                f"another build into {out} is running (process {holder} holds {path}: a "
                f"build, rebuild, optimize or tune-fusion); {hint}"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = -1
        if current == os.fstat(fd).st_ino:
            return fd
        os.close(fd)  # won the lock of a file its holder just removed: try again


@contextmanager
def build_lock(out: Path, hint: str = BUILD_HINT) -> Iterator[Path]:
    """Hold the exclusive lock of builds into ``out``, or raise ``BuildLocked`` (its
    message ends with ``hint``, what to do); the lock file is removed when the build ends."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path, out, hint)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # before the lock goes: see ``_lock``
        os.close(fd)


def ordered_retrievers(names: tuple[str, ...]) -> list[str]:
    """Validate names (exact) and order them so requirements come first."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        raise InputError("no retrievers given; e.g. --retrievers bm25,dense")
    for name in wanted:
        for needed in SUBINDEXES.get(name).requires:
            if needed not in wanted:
                raise InputError(f"retriever {name!r} needs {needed!r}; add it to --retrievers")
    order: list[str] = []
    while len(order) < len(wanted):
        for name in wanted:
            if name not in order and all(r in order for r in SUBINDEXES.get(name).requires):
                order.append(name)
    return order


__all__ = ["build_collection", "publish", "recover_interrupted_publish"]


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(
            f"--out {out} is a non-empty directory that is not a Twofold collection; "
            "choose another path"
        )


def _state(corpus: Path, options: BuildOptions) -> dict[str, Any]:
    """What the doc store of a partial build was made from (it is reused when equal)."""
    stat = corpus.stat()
    return {
        "corpus": str(corpus.resolve()),
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "docs": options.docs_fingerprint(),
        "twofold": __version__,
    }


def _read_state(staging: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((staging / STATE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return state


def _write_state(staging: Path, state: dict[str, Any]) -> None:
    tmp = staging / (STATE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(staging / STATE)


def _prepare_partial(staging: Path, state: dict[str, Any], names: list[str]) -> bool:
    """Reuse a partial build of the same corpus and doc options (dropping sub-indexes no
    longer wanted); else start clean. True = resuming."""
    if staging.is_dir():
        prior = _read_state(staging)
        if {k: v for k, v in prior.items() if k != "finished"} == state:
            for name in RETRIEVER_NAMES:
                if name not in names and (staging / name).is_dir():
                    shutil.rmtree(staging / name)
            return True
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _write_state(staging, {**state, "finished": {}})
    return False


def _write_docs(corpus: Path, staging: Path, options: BuildOptions) -> dict[str, Any]:
    docs_dir = staging / "docs"
    done = docs_dir / COMPLETE
    if done.is_file():
        info: dict[str, Any] = json.loads(done.read_text())
        return info
    report = ReadReport()
    docs = read_corpus(
        corpus,
        options.corpus_format,
        skip_invalid=options.skip_invalid,
        report=report,
        max_docs=options.max_docs,
    )
    if options.progress:
        from tqdm import tqdm

        docs = tqdm(docs, desc="docs", unit="doc", dynamic_ncols=True)
    with DocStoreWriter(docs_dir) as writer:
        for doc in docs:
            writer.add(doc)
    if report.read == 0:
        raise InputError(
            f"{corpus} holds no documents"
            + (f" ({report.skipped} invalid lines skipped)" if report.skipped else "")
        )
    info = {
        "path": str(corpus),
        "format": options.corpus_format.format,
        "read": report.read,
        "skipped": report.skipped,
        "skip_reasons": report.reasons,
    }
    done.write_text(json.dumps(info))
    return info


def _executor(
    options: BuildOptions, names: list[str], device: str
) -> AbstractContextManager[Executor]:
    """Where the document encoding runs: here (``local``), or on a Ray cluster joined
    now, before anything is written (``ray``; left when the build ends)."""
    encoded = [n for n in names if n in ENCODED]
    if options.executor.kind == "ray" and encoded:
        from twofold.indexing.ray_executor import ray_session

        return ray_session(options.executor, options.device, options.progress)
    if options.executor.kind == "ray":
        log.warning("--executor ray: nothing to encode (%s run here)", ", ".join(names))
    return nullcontext(LocalExecutor(device, options.progress))


def build_subindexes(
    staging: Path, names: list[str], options: BuildOptions, device: str, executor: Executor
) -> dict[str, dict[str, Any]]:
    """Build each sub-index not yet marked complete in ``staging`` with its current
    options; their manifest entries."""
    ctx = BuildContext(DocStore(staging / "docs"), options, device, executor)
    entries: dict[str, dict[str, Any]] = {}
    rebuilt: set[str] = set()  # built in this run: what requires them is built again
    for name in names:
        sub = staging / name
        marker = sub / COMPLETE
        wanted = options.subindex_fingerprint(name)
        if marker.is_file():
            entry = json.loads(marker.read_text())
            same = _read_state(staging).get("finished", {}).get(name) == wanted
            stale = rebuilt.intersection(SUBINDEXES.get(name).requires)
            if same and not stale and not _weights_changed(name, entry):
                log.info("%s: finished in the partial build; reused", name)
                entries[name] = entry
                continue
            shutil.rmtree(sub)
        rebuilt.add(name)
        log.info("building %s", name)
        t0 = time.time()
        entry = SUBINDEXES.get(name).load().build(ctx, sub)
        entry["build_seconds"] = round(time.time() - t0, 3)
        state = _read_state(staging)
        state.setdefault("finished", {})[name] = wanted
        _write_state(staging, state)  # before the marker: a marker implies its options
        marker.write_text(json.dumps(entry))
        entries[name] = entry
    ctx.docs.close()
    return entries


def _weights_changed(name: str, entry: dict[str, Any]) -> bool:
    """Whether a finished sub-index of a partial build was encoded with weights other
    than those now on disk under its encoder's name (a model retrained between the
    crash and the resume): it is then built again, never published beside the rest."""
    from twofold.models.registry import model_fingerprint

    recorded = entry.get("encoder") or {}
    if recorded.get("sha256") in (None, "unknown"):
        return False
    try:
        current = model_fingerprint(str(recorded["name"]))["sha256"]
    except TwofoldError:
        return True
    if current != recorded["sha256"]:
        log.warning(
            "%s: the weights of %s changed since it was built; rebuilding it",
            name,
            recorded["name"],
        )
        return True
    return False


def build_collection(
    corpus: Path, out: Path, options: BuildOptions, milvus: MilvusTarget | None = None
) -> Manifest:
    """Build ``out`` from ``corpus`` with ``options``; returns the published manifest.

    With ``milvus``, the sparse/splade/dense vectors and the doc fields are written into
    that Milvus collection before publishing, and the published directory keeps only
    what the query side needs (see ``milvus_store``)."""
    corpus = resolve_corpus_path(corpus)
    names = ordered_retrievers(options.retrievers)
    check_options(options, names)  # model names, PQ m vs the model's dimension
    with build_lock(out):
        return _build_locked(corpus, out, names, options, milvus)


def _build_locked(
    corpus: Path,
    out: Path,
    names: list[str],
    options: BuildOptions,
    milvus: MilvusTarget | None,
) -> Manifest:
    recover_interrupted_publish(out)
    _check_output(out)
    if milvus is not None:
        check_milvus_target(milvus, names, out)  # before any encoding
    # with Ray, --device is where the actors encode; this process uses what it has
    here = options.device if options.executor.kind == "local" or options.device == "cpu" else "auto"
    device = resolve_device(here)
    started = time.time()
    staging = partial_dir(out)
    with _executor(options, names, device) as executor:  # joins a Ray cluster first
        out.parent.mkdir(parents=True, exist_ok=True)
        if _prepare_partial(staging, _state(corpus, options), names):
            log.info("resuming the partial build in %s", staging)
        try:
            corpus_info = _write_docs(corpus, staging, options)
            check_doc_count(options, names, int(corpus_info["read"]))
            entries = build_subindexes(staging, names, options, device, executor)
        except InputError as exc:
            kept = _finished(staging)
            if not kept:  # nothing written worth keeping: leave nothing on disk
                shutil.rmtree(staging, ignore_errors=True)
                raise
            raise PartialBuildKept(exc, staging, kept) from exc
    if milvus is not None:
        entries = _push(staging, entries, milvus, out, options.progress)
    manifest = Manifest(
        doc_count=int(corpus_info["read"]),
        sub_indexes=entries,
        corpus=corpus_info,
        build={
            "twofold": __version__,
            "device": device,
            "executor": {
                "kind": executor.kind,
                "device": executor.device,
                "actors": executor.actors,
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 3),
            "options": options.fingerprint(),
        },
        files=file_table(staging),
    )
    write_manifest(staging, manifest)
    publish(staging, out)
    if milvus is not None:
        drop_local_vectors(out, entries)  # after publish: a rerun can still resume
    return manifest


def _push(
    staging: Path,
    entries: dict[str, dict[str, Any]],
    milvus: MilvusTarget,
    out: Path,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Write the finished build's vectors into Milvus. Bad input found only now (the
    collection was taken by someone else during the build) keeps the partial build, as an
    input error found while encoding does; a failed write says how to resume."""
    docs = DocStore(staging / "docs")
    try:
        return push_to_milvus(staging, entries, docs, milvus, out, progress)
    except InputError as exc:
        raise PartialBuildKept(exc, staging, _finished(staging)) from exc
    finally:
        docs.close()


def _finished(staging: Path) -> list[str]:
    """What a rerun of a partial build can reuse: the doc store, finished sub-indexes."""
    done = ["doc store"] if (staging / "docs" / COMPLETE).is_file() else []
    return done + [n for n in RETRIEVER_NAMES if (staging / n / COMPLETE).is_file()]


def publish(staging: Path, out: Path) -> None:
    """Move a finished build into place (``indexing.publish``: fsync, then an atomic
    swap of the link ``out``); an older collection at ``out`` is replaced."""
    (staging / STATE).unlink(missing_ok=True)
    (staging / (STATE + ".tmp")).unlink(missing_ok=True)  # left by a crash mid-write
    publish_version(staging, out)
