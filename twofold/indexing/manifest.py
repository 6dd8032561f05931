"""``manifest.json``: what a collection holds, written last, validated on open."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twofold.core.errors import CollectionError, FormatVersionError

KIND = "twofold-collection"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """``sub_indexes`` maps a retriever name to its own parameters (and encoder)."""

    doc_count: int
    sub_indexes: dict[str, dict[str, Any]]
    corpus: dict[str, Any]
    build: dict[str, Any]
    pipelines: dict[str, Any] = field(default_factory=dict)
    # path -> {"size", "sha256"} of every file at build time (``indexing.verify``)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    kind: str = KIND
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_dict(obj: dict[str, Any], where: str = "manifest") -> Manifest:
        if obj.get("kind") != KIND:
            raise CollectionError(f"{where}: kind is {obj.get('kind')!r}, expected {KIND!r}")
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatVersionError(
                f"{where}: format_version {version!r} is not supported (this Twofold reads "
                f"{FORMAT_VERSION}); rebuild the collection with `twofold index build`"
            )
        try:
            return Manifest(
                doc_count=int(obj["doc_count"]),
                sub_indexes=dict(obj["sub_indexes"]),
                corpus=dict(obj["corpus"]),
                build=dict(obj["build"]),
                pipelines=dict(obj.get("pipelines", {})),
                files=dict(obj.get("files", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectionError(f"{where}: malformed manifest ({exc})") from None


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write atomically (temp file + fsync + rename)."""
    tmp = directory / (MANIFEST + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(manifest.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(directory / MANIFEST)


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise CollectionError(f"collection {directory} does not exist")
    if not path.is_file():
        raise CollectionError(
            f"{directory} has no {MANIFEST}: not a collection, or a build that did not finish"
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CollectionError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CollectionError(f"{path} is not a JSON object")
    return Manifest.from_dict(obj, str(path))
