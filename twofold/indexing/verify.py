"""File sizes and sha256 of a collection, recorded in its manifest at build time and
checked by ``twofold index verify DIR`` and by the service before it opens a collection.

``manifest.files`` maps each file's path (relative, ``/``-separated) to
``{"size": bytes, "sha256": hex}``. Not recorded: the manifest itself (it is what
records) and the build's resume state. Files added to a collection after its build
(a trained adapter) are not checked; files Milvus took over (``twofold index push``)
may be absent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from twofold.core.errors import CollectionError
from twofold.indexing.manifest import MANIFEST, read_manifest

Depth = Literal["off", "sizes", "sha256"]
# the manifest, the build's resume state, the Milvus push's resume state
UNRECORDED = (MANIFEST, MANIFEST + ".tmp", ".build.json", "milvus.json")
CHUNK = 1 << 20
log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and rel not in UNRECORDED:
            yield rel, path


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``root`` (the manifest and resume state aside): size and sha256."""
    return {
        rel: {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for rel, path in _files(root)
    }


@dataclass
class VerifyReport:
    root: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    unrecorded: bool = False  # built before files were recorded: nothing to check against

    @property
    def ok(self) -> bool:
        return not self.problems


def _served_elsewhere(entries: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """Path prefixes of the local files a Milvus-backed sub-index no longer keeps."""
    from twofold.indexing.milvus_store import BACKEND, LOCAL_VECTOR_FILES

    return tuple(
        f"{name}/{file}"
        for name, files in LOCAL_VECTOR_FILES.items()
        if entries.get(name, {}).get("backend") == BACKEND
        for file in files
    )


def verify_collection(root: Path, depth: Depth = "sha256") -> VerifyReport:
    """Check every recorded file of the collection at ``root`` (size, then sha256 unless
    ``depth`` is ``sizes``); a collection built before files were recorded is a problem
    too (it cannot be verified)."""
    manifest = read_manifest(root)
    report = VerifyReport(root)
    if depth == "off":
        return report
    if not manifest.files:
        report.unrecorded = True
        report.problems.append(
            "the manifest records no file sizes or hashes (built before Twofold recorded "
            "them); rebuild the collection to make it verifiable"
        )
        return report
    elsewhere = _served_elsewhere(manifest.sub_indexes)
    for rel, want in sorted(manifest.files.items()):
        path = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            report.problems.append(f"{rel}: not a path inside the collection")
            continue
        if not path.is_file():
            if not rel.startswith(elsewhere) or not elsewhere:
                report.problems.append(f"{rel}: missing")
            continue
        report.checked += 1
        size = path.stat().st_size
        if size != int(want["size"]):
            report.problems.append(f"{rel}: {size} bytes, the manifest records {want['size']}")
        elif depth == "sha256" and sha256_file(path) != want["sha256"]:
            report.problems.append(f"{rel}: sha256 differs from the manifest's (file changed)")
    return report


def check_collection(root: Path, depth: Depth = "sha256", shown: Path | None = None) -> None:
    """Raise ``CollectionError`` naming every problem when ``root`` fails verification.
    A collection built before files were recorded is served with a warning (it cannot
    be checked, which is not evidence of damage)."""
    report = verify_collection(root, depth)
    if report.unrecorded:
        log.warning("collection %s cannot be verified: %s", shown or root, report.problems[0])
        return
    if not report.ok:
        name = shown or root  # the name served, where ``root`` is the version it links to
        listed = "; ".join(report.problems[:10])
        more = f" (and {len(report.problems) - 10} more)" if len(report.problems) > 10 else ""
        raise CollectionError(
            f"collection {name} failed verification: {listed}{more}; rebuild it or restore "
            "its files (`twofold index verify` lists them)"
        )
