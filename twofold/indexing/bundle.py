"""Query-side models inside the collection, so that a collection is self-contained.

A sub-index whose query side runs a model (``dense``: the bi-encoder; ``splade``: the
siamese MLM) gets that model's files in ``NAME/model/`` at build time: hard-linked
when the model lies on the same filesystem as the collection (no extra disk), else
copied. The manifest entry says which (``model_files``), and records the model
reference resolved to an absolute path. The query side loads the bundled copy, so a
collection served from another working directory, or after the model folder moved or
was deleted, still answers.

A hard link shares its file with the model folder: a training run that rewrites that
file in place changes the collection too. ``twofold index verify`` (the files table)
and the weights check at load (the sha256 of the weights read, see
``models.registry.weights_sha256``) both catch that; they refuse such a collection.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from twofold.core.errors import CollectionError, ModelError

log = logging.getLogger(__name__)
MODEL_DIR = "model"


def model_reference(name_or_path: str) -> str:
    """A registry name or a hub id unchanged; a directory as its absolute path."""
    from twofold.models.registry import MODELS

    if name_or_path in MODELS:
        return name_or_path
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def _model_dir(name_or_path: str) -> Path:
    """The local directory the model's files come from (a hub id: its cached snapshot)."""
    from twofold.models.registry import resolve

    source = resolve(name_or_path)
    if isinstance(source, Path):
        return source.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True)).resolve()
    except Exception as exc:  # not cached locally: nothing to bundle
        raise ModelError(
            f"model {name_or_path!r} has no local files to put into the collection ({exc}); "
            "download it into a directory and pass that directory"
        ) from None


def place_file(src: Path, dst: Path) -> str:
    """Hard-link ``src`` at ``dst``, or copy it where a link cannot be made."""
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    shutil.copy2(src, dst)
    return "copy"


def bundle_model(name_or_path: str, sub: Path) -> dict[str, Any]:
    """Put the files of model ``name_or_path`` into ``sub/model``; the manifest's
    ``model_files`` entry (``dir``, ``how``: hardlink | copy | mixed, ``source``,
    ``files``, ``bytes``). Hidden files (``.verified``, ``.gitattributes``) are left out."""
    source = _model_dir(name_or_path)
    dest = sub / MODEL_DIR
    if dest.exists():
        shutil.rmtree(dest)  # a resumed build: bundle the model as it is now
    how: set[str] = set()
    files = size = 0
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        how.add(place_file(path.resolve(), target))
        files += 1
        size += target.stat().st_size
    if not files:
        raise ModelError(f"model {name_or_path!r}: {source} holds no files")
    log.info("%s: model %s %s into the collection", sub.name, source, "/".join(sorted(how)))
    return {
        "dir": MODEL_DIR,
        "how": how.pop() if len(how) == 1 else "mixed",
        "rule": "hard-linked when on the collection's filesystem, else copied",
        "source": str(source),
        "files": files,
        "bytes": size,
    }


def bundled_model(sub: Path, entry: dict[str, Any], fallback: str) -> str:
    """What the query side loads: the bundled copy in ``sub`` when the build made one,
    else ``fallback`` (the reference of a collection built before models were bundled)."""
    files = entry.get("model_files")
    if not files:
        return fallback
    where = sub / str(files["dir"])
    if not where.is_dir():
        raise CollectionError(f"{sub}: its model folder {files['dir']!r} is missing; rebuild")
    return str(where)
