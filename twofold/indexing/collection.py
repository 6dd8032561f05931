"""Open a published collection: manifest, doc store and its sub-indexes.

``Collection(path)`` reads the manifest and the doc store; ``index(name)`` opens one
sub-index on first use. The service calls ``open_all`` at load and reload, so that
every sub-index is opened (and its document count checked against the doc store)
before the collection answers a request, and ``close`` when a reload replaces it:
Lucene readers, file descriptors and memory maps are released then, not at some
later garbage collection.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from twofold.core.errors import CollectionError, TwofoldError
from twofold.indexing.docstore import DocStore
from twofold.indexing.manifest import Manifest, read_manifest
from twofold.indexing.subindexes import SUBINDEXES


class Collection:
    """A collection directory opened for reading. Sub-indexes open on first use."""

    def __init__(self, path: Path, root: Path | None = None) -> None:
        # ``path`` is the collection's name on disk (a link swapped at each publish);
        # ``root`` the version it resolved to when opened, which every read goes to, so
        # that a collection opened before a republish never mixes two versions
        self.path = path
        self.root = (root or path).resolve()
        self.manifest: Manifest = read_manifest(self.root)
        self.docs = DocStore(self.root / "docs")
        if len(self.docs) != self.manifest.doc_count:
            raise CollectionError(
                f"{path}: doc store holds {len(self.docs)} documents, the "
                f"manifest says {self.manifest.doc_count}"
            )
        self._opened: dict[str, Any] = {}
        self._closed = False
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def retrievers(self) -> list[str]:
        return list(self.manifest.sub_indexes)

    def has(self, name: str) -> bool:
        return name in self.manifest.sub_indexes

    def opened(self) -> list[str]:
        """The sub-indexes opened so far."""
        with self._lock:
            return list(self._opened)

    def open_all(self) -> None:
        """Open every sub-index of the manifest now and check that each holds as many
        documents as the doc store (a sub-index from another build is refused here,
        naming it, rather than answering with the wrong documents)."""
        for name in self.retrievers:
            count = doc_count(self.index(name))
            if count is not None and count != len(self.docs):
                raise CollectionError(
                    f"collection {self.name!r}: its {name!r} index holds {count} documents, "
                    f"the doc store {len(self.docs)}; the sub-indexes come from different "
                    "builds: rebuild the collection"
                )

    def close(self) -> None:
        """Close every opened sub-index (Lucene readers, memory maps) and the doc store.
        Nothing may search the collection afterwards."""
        with self._lock:
            opened, self._opened = self._opened, {}
            self._closed = True
        for index in opened.values():
            close = getattr(index, "close", None)
            if callable(close):
                close()
        self.docs.close()

    def index(self, name: str) -> Any:
        """The opened sub-index ``name`` (opened once, then shared)."""
        with self._lock:
            if self._closed:
                raise CollectionError(f"collection {self.name!r} was closed (reloaded)")
            if name not in self._opened:
                if not self.has(name):
                    raise CollectionError(
                        f"collection {self.name!r} has no {name!r} index (it has: "
                        f"{', '.join(self.retrievers)}); rebuild with --retrievers {name}"
                    )
                entry = self.manifest.sub_indexes[name]
                module = _backend(entry) or SUBINDEXES.get(name).load()
                try:
                    self._opened[name] = module.open_index(self.root / name, entry)
                except TwofoldError:
                    raise
                except Exception as exc:  # a damaged index: say which, not a Java trace
                    raise CollectionError(
                        f"collection {self.name!r}: cannot open its {name!r} index "
                        f"({type(exc).__name__}: {str(exc)[:300]}); rebuild the collection"
                    ) from exc
            return self._opened[name]


def doc_count(index: Any) -> int | None:
    """How many documents an opened sub-index holds (its ``doc_count``), or None for a
    sub-index that cannot say."""
    count = getattr(index, "doc_count", None)
    return None if count is None else int(count)


def _backend(entry: dict[str, Any]) -> ModuleType | None:
    """The module that opens a sub-index kept in an external engine (``backend`` in its
    manifest entry: ``milvus``); None for the local, embedded formats."""
    backend = entry.get("backend", "local")
    if backend == "local":
        return None
    if backend == "milvus":
        return importlib.import_module("twofold.indexing.milvus_index")
    raise CollectionError(f"unknown sub-index backend {backend!r}; known: local, milvus")


def open_collection(path: Path) -> Collection:
    return Collection(path)
