"""The doc store: documents by ordinal and by id, with random access.

Layout (``docs/``): ``docs.jsonl`` (one JSON object per document, ordinal order),
``offsets.npy`` (int64 byte offsets, n+1 entries) and ``ids.txt`` (one id per line).
Every sub-index refers to documents by ordinal; this store maps ordinals to ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from twofold.core.errors import CollectionError, NotFoundError
from twofold.core.types import Doc

FORMAT_VERSION = 1
ITER_BLOCK = 1024  # documents per read when streaming the whole store


class DocStoreWriter:
    """Append documents in order; ``close`` writes the offsets and ids."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._fh: IO[bytes] = (directory / "docs.jsonl").open("wb")
        self._ids = (directory / "ids.txt").open("w", encoding="utf-8")
        self._offsets: list[int] = [0]

    def add(self, doc: Doc) -> int:
        line = (
            json.dumps(
                {
                    "id": doc.doc_id,
                    "title": doc.title,
                    "text": doc.text,
                    "metadata": dict(doc.metadata),
                },
                ensure_ascii=False,
            ).encode("utf-8")
            + b"\n"
        )
        self._fh.write(line)
        self._ids.write(doc.doc_id + "\n")
        self._offsets.append(self._offsets[-1] + len(line))
        return len(self._offsets) - 2

    def close(self) -> None:
        self._fh.close()
        self._ids.close()
        np.save(self.directory / "offsets.npy", np.asarray(self._offsets, dtype=np.int64))

    def __enter__(self) -> DocStoreWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class DocStore:
    """Read-only access to a written doc store; safe to share between threads.

    One file descriptor is opened at start and read with ``os.pread`` (no shared file
    position), so a collection republished at the same path keeps serving the
    documents it was opened with until it is closed.
    """

    def __init__(self, directory: Path) -> None:
        if not (directory / "offsets.npy").is_file():
            raise CollectionError(f"{directory} is not a doc store (offsets.npy missing)")
        self.directory = directory
        self._offsets = np.load(directory / "offsets.npy", mmap_mode="r")
        self.ids: list[str] = (directory / "ids.txt").read_text(encoding="utf-8").splitlines()
        if len(self.ids) != len(self._offsets) - 1:
            raise CollectionError(f"doc store {directory} is inconsistent (ids vs offsets)")
        self._ordinal = {doc_id: i for i, doc_id in enumerate(self.ids)}
        self._path = directory / "docs.jsonl"
        self._fd = os.open(self._path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._ordinal

    def ordinal(self, doc_id: str) -> int:
        try:
            return self._ordinal[doc_id]
        except KeyError:
            raise NotFoundError(f"unknown doc id {doc_id!r}") from None

    def by_ordinal(self, i: int) -> Doc:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return _decode(os.pread(self._fd, end - start, start))

    def get(self, doc_id: str) -> Doc:
        return self.by_ordinal(self.ordinal(doc_id))

    def slice(self, start: int, stop: int) -> list[Doc]:
        """Documents ``start`` to ``stop - 1`` in ordinal order, read with one ``pread``."""
        stop = min(stop, len(self.ids))
        if start >= stop:
            return []
        first = int(self._offsets[start])
        block = os.pread(self._fd, int(self._offsets[stop]) - first, first)
        return [_decode(line) for line in block.splitlines()]

    def __iter__(self) -> Iterator[Doc]:
        """Documents in ordinal order, read in blocks of ``ITER_BLOCK`` with ``pread``."""
        for first in range(0, len(self.ids), ITER_BLOCK):
            last = min(first + ITER_BLOCK, len(self.ids))
            start = int(self._offsets[first])
            block = os.pread(self._fd, int(self._offsets[last]) - start, start)
            for line in block.splitlines():
                yield _decode(line)

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
            self._offsets = np.zeros(1, dtype=np.int64)  # drop the memory map

    def __del__(self) -> None:
        self.close()


def _decode(line: bytes) -> Doc:
    obj = json.loads(line)
    return Doc(obj["id"], obj["title"], obj["text"], obj.get("metadata") or {})
