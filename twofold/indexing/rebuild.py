"""Build one sub-index of a published collection again with changed options, without
re-encoding the others: ``twofold optimize``'s ``dense`` step swaps in a fine-tuned
bi-encoder this way.

:func:`stage_rebuild` makes a staged sibling ``.NAME.rebuild`` of the collection. Every
file of the current version is hard-linked there (copied where a link cannot be made),
except the sub-index being rebuilt, what requires it (``interests`` requires ``dense``)
and what was trained over it (the dense query adapter). Those are built again from the
collection's own doc store, so the corpus is not read again. The caller checks the staged
collection (it opens like any other), then :func:`publish_rebuild` swaps it in with the
same atomic publish as a build, or :func:`discard_rebuild` removes it. Call all three
with the collection's build lock held (``build.build_lock``).

Hard links are safe here because nothing in a published collection is written in place:
builds and trainers publish whole new files or folders.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twofold import __version__
from twofold.core.errors import CollectionError, InputError
from twofold.indexing.build import build_subindexes
from twofold.indexing.build import publish as publish_build
from twofold.indexing.buildctx import BuildOptions, DenseOptions, InterestOptions
from twofold.indexing.bundle import MODEL_DIR, place_file
from twofold.indexing.dense.adapter import FOLDER as ADAPTER_FOLDER
from twofold.indexing.encoding import Executor, LocalExecutor
from twofold.indexing.manifest import Manifest, read_manifest, write_manifest
from twofold.indexing.preflight import check_options
from twofold.indexing.subindexes import SUBINDEXES
from twofold.indexing.verify import file_table
from twofold.models.device import resolve_device

log = logging.getLogger(__name__)
REBUILDABLE = ("dense",)
TRAINED_OVER = {"dense": (ADAPTER_FOLDER,)}  # what is dropped with the sub-index


def rebuild_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.rebuild"


def _link_tree(src: Path, dst: Path, skip: set[str]) -> None:
    """``dst`` as a tree of hard links to ``src``'s files, top-level names in ``skip``
    left out."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n in skip] if Path(folder) == src else []

    def link(s: str, d: str) -> None:
        place_file(Path(s), Path(d))

    shutil.copytree(src, dst, ignore=ignore, copy_function=link, symlinks=True)


def _options(
    manifest: Manifest, name: str, changes: Mapping[str, Any], progress: bool
) -> BuildOptions:
    """The build options of ``name`` (and of what requires it) as recorded in the
    manifest, with ``changes`` applied to ``name``'s own options."""
    recorded = manifest.build.get("options") or {}
    try:
        dense = dict(recorded["dense"])
        max_length = int(dense.pop("max_length"))
        dense_options = DenseOptions(**{**dense, **changes})
        interests = InterestOptions(**recorded["interests"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CollectionError(
            f"the manifest does not record the options of {name!r} in this version's form "
            f"({exc}); rebuild the collection with `twofold index build`"
        ) from None
    return BuildOptions(
        retrievers=tuple(manifest.sub_indexes),
        max_length=max_length,
        dense=dense_options,
        interests=interests,
        progress=progress,
    )


def stage_rebuild(
    out: Path,
    name: str,
    changes: Mapping[str, Any],
    progress: bool = True,
    executor: Executor | None = None,
) -> Path:
    """Stage ``out`` with sub-index ``name`` (and what requires it) built again with
    ``changes`` to its options (e.g. ``{"model": DIR}``); returns the staged directory
    (a collection that opens, not yet published). ``executor``: where the documents are
    encoded (default: here), e.g. ``dense.shards.ReuseVectors``."""
    if name not in REBUILDABLE:
        raise InputError(f"only {', '.join(REBUILDABLE)} can be rebuilt in place, not {name!r}")
    manifest = read_manifest(out)
    if name not in manifest.sub_indexes:
        raise InputError(f"collection {out} has no {name!r} sub-index to rebuild")
    if manifest.sub_indexes[name].get("backend", "embedded") != "embedded":
        raise InputError(f"{name!r} of {out} is served by another backend; rebuild it there")
    names = [name] + [
        n for n in manifest.sub_indexes if name in SUBINDEXES.get(n).requires and n != name
    ]
    options = _options(manifest, name, changes, progress)
    check_options(options, names)
    staging = rebuild_dir(out)
    shutil.rmtree(staging, ignore_errors=True)  # left by a crash: never published
    started = time.time()
    _link_tree(out.resolve(), staging, {*names, *TRAINED_OVER.get(name, ())})
    try:
        device = resolve_device("auto")
        executor = executor or LocalExecutor(device, progress)
        entries = build_subindexes(staging, names, options, device, executor)
        recorded = dict(manifest.build.get("options") or {})
        recorded.update({n: options.subindex_fingerprint(n) for n in names})
        if "model" in changes:  # the bundled copy outlives the directory it came from
            entries[name]["model"] = recorded[name]["model"] = in_collection_model(out, name)
        rebuilt = {n: {"created": datetime.now(UTC).isoformat(timespec="seconds")} for n in names}
        write_manifest(
            staging,
            replace(
                manifest,
                sub_indexes={**manifest.sub_indexes, **entries},
                build={
                    **manifest.build,
                    "options": recorded,
                    "rebuilt": {
                        **(manifest.build.get("rebuilt") or {}),
                        **rebuilt,
                        "twofold": __version__,
                        "seconds": round(time.time() - started, 3),
                    },
                },
                files=file_table(staging),
            ),
        )
    except BaseException:
        discard_rebuild(out)
        raise
    return staging


def in_collection_model(out: Path, name: str) -> str:
    """Where the bundled model of sub-index ``name`` is once published: a path through the
    collection's own name, so that it stays valid across versions."""
    return str(out.absolute() / name / MODEL_DIR)


def publish_rebuild(out: Path) -> None:
    """Make the staged rebuild the collection at ``out`` (atomic; the old version goes)."""
    staging = rebuild_dir(out)
    if not staging.is_dir():
        raise CollectionError(f"no staged rebuild of {out} to publish")
    log.info("publishing the rebuilt %s", out)
    publish_build(staging, out)


def discard_rebuild(out: Path) -> None:
    shutil.rmtree(rebuild_dir(out), ignore_errors=True)
