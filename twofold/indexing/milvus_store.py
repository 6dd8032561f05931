"""The Milvus backend's writer: a collection's vectors and doc fields into one Milvus
collection (``pymilvus``; any Milvus speaking the client protocol: standalone,
distributed, Zilliz, or ``milvus-lite server`` on loopback for tests).

One Milvus collection per Twofold collection. Fields::

    id       INT64 primary key   the doc-store ordinal (row i of the local doc store)
    doc_id   VARCHAR(1024)        the corpus id
    title    VARCHAR(65535)       doc-store fields (UTF-8, cut at 65535 bytes)
    text     VARCHAR(65535)
    sparse   SPARSE_FLOAT_VECTOR  inference-free doc weights w_d (SPARSE_INVERTED_INDEX, IP)
    splade   SPARSE_FLOAT_VECTOR  siamese SPLADE doc weights (absent when the ``splade``
                                  doc side equals ``sparse``'s: it then searches ``sparse``)
    dense    FLOAT_VECTOR(dim)    normalized embeddings (HNSW or IVF_FLAT, IP)

Milvus refuses an empty sparse vector, so a document with no terms gets one weight on
term id ``vocab_size`` (``EMPTY_TERM``), which no query ever contains: it scores 0.

Writing is resumable: rows go in by ``upsert`` (idempotent on the ordinal) in batches
of ``batch_size``, and ``milvus.json`` in the sub-index root records the rows done, so
a rerun continues after the last finished batch. A Milvus collection of the same name
that this build did not create is never dropped: the write refuses instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from twofold.core.errors import CollectionError, DependencyError, InputError
from twofold.indexing.docstore import DocStore
from twofold.indexing.manifest import Manifest, read_manifest, write_manifest

log = logging.getLogger(__name__)

BACKEND = "milvus"
MILVUS_RETRIEVERS = ("sparse", "splade", "dense")
STATE = "milvus.json"
SIGNATURE = "twofold.signature"  # collection property: what wrote it
VARCHAR_BYTES = 65535
DENSE_INDEXES = ("hnsw", "ivf_flat")
DENSE_DEFAULTS: dict[str, dict[str, int]] = {
    "hnsw": {"M": 16, "efConstruction": 200, "ef": 128},
    "ivf_flat": {"nprobe": 32},
}
URI_ENV = "TWOFOLD_MILVUS_URI"  # overrides the manifest's URI when serving
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


@dataclass(frozen=True)
class MilvusTarget:
    """Where ``twofold index build --backend milvus`` writes: ``uri`` (``http://host:19530``),
    ``collection`` (None: ``twofold_`` + the output directory's name), the dense index
    (``hnsw`` or ``ivf_flat``) and rows per write."""

    uri: str
    collection: str | None = None
    dense_index: str = "hnsw"
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not re.match(r"^(https?|tcp|grpc)://[^/\s]+(:\d+)?/?$", self.uri):
            raise InputError(
                f"--milvus-uri {self.uri!r} is not a Milvus server address; "
                "give e.g. http://127.0.0.1:19530"
            )
        if self.collection is not None and not valid_name(self.collection):
            raise InputError(
                f"--milvus-collection {self.collection!r}: use letters, digits and _, "
                "starting with a letter or _ (at most 255)"
            )
        if self.dense_index not in DENSE_INDEXES:
            raise InputError(f"--milvus-dense-index must be one of {', '.join(DENSE_INDEXES)}")
        if self.batch_size < 1:
            raise InputError("--milvus-batch-size must be >= 1")

    def name_for(self, out: Path) -> str:
        if self.collection:
            return self.collection
        return "twofold_" + re.sub(r"[^A-Za-z0-9_]", "_", out.name.lstrip("."))[:200]


def valid_name(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name))


def pymilvus() -> Any:
    try:
        import pymilvus as module
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise DependencyError("the Milvus backend needs pymilvus: pip install pymilvus") from exc
    return module


def client(uri: str) -> Any:
    """One ``MilvusClient`` per URI and process (thread-safe; shared by the indexes)."""
    with _clients_lock:
        if uri not in _clients:
            try:
                _clients[uri] = pymilvus().MilvusClient(uri=uri, timeout=10)
            except Exception as exc:
                raise CollectionError(f"cannot reach Milvus at {uri}: {exc}") from exc
        return _clients[uri]


def serving_uri(entry: Mapping[str, Any]) -> str:
    """The URI a server uses: ``$TWOFOLD_MILVUS_URI`` when set, else the build's."""
    return os.environ.get(URI_ENV) or str(entry["milvus"]["uri"])


# ----------------------------------------------------------------------------- rows
def _cut(text: str, limit: int = VARCHAR_BYTES) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", errors="ignore")


def csr_from_postings(path: Path, n_docs: int, vocab_size: int) -> sp.csr_matrix:
    """The (docs x V) CSR doc vectors back from a sparse sub-index's CSC postings."""
    post = path / "postings"
    csc = sp.csc_matrix(
        (
            np.load(post / "weights.npy"),
            np.load(post / "docs.npy"),
            np.load(post / "indptr.npy"),
        ),
        shape=(n_docs, vocab_size),
    )
    return csc.tocsr()


def sparse_row(matrix: sp.csr_matrix, i: int, empty_term: int) -> dict[int, float]:
    s, e = matrix.indptr[i], matrix.indptr[i + 1]
    row = {
        int(j): float(w)
        for j, w in zip(matrix.indices[s:e].tolist(), matrix.data[s:e].tolist(), strict=True)
        if w > 0
    }
    return row or {empty_term: 1.0}


@dataclass
class _Sources:
    """The local arrays a push reads: sparse matrices per Milvus field, dense vectors."""

    sparse: dict[str, sp.csr_matrix]
    empty_term: dict[str, int]
    dense: np.ndarray | None


def check_milvus_target(target: MilvusTarget, retrievers: list[str], out: Path) -> None:
    """Refuse a build that cannot go to Milvus, before anything is encoded: none of its
    retrievers lives there, the server does not answer, or the collection it would write
    into ``target.name_for(out)`` belongs to someone else."""
    if not set(retrievers) & set(MILVUS_RETRIEVERS):
        raise InputError(
            "--backend milvus needs at least one of sparse, splade, dense in --retrievers "
            "(bm25 and interests stay local)"
        )
    try:
        milvus = client(target.uri)
        milvus.list_collections()
    except CollectionError:
        raise
    except Exception as exc:
        raise CollectionError(f"cannot reach Milvus at {target.uri}: {exc}") from exc
    _signature_of(milvus, target.name_for(out), target.uri)


def _signature_of(milvus: Any, name: str, uri: str) -> str | None:
    """The Twofold signature of Milvus collection ``name`` (None: there is none); refuses
    a collection that Twofold did not write, which is never dropped or written into."""
    if not milvus.has_collection(name):
        return None
    properties = milvus.describe_collection(name).get("properties") or {}
    description = str(properties.get(SIGNATURE, ""))
    if not description.startswith("twofold "):
        raise InputError(
            f"Milvus collection {name!r} at {uri} exists and was not written by "
            "Twofold; choose another --milvus-collection or drop it yourself"
        )
    return description


def _plan(root: Path, entries: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """retriever -> the Milvus field it searches (``splade`` shares ``sparse`` when its
    documents were copied from it)."""
    fields = {}
    for name in MILVUS_RETRIEVERS:
        if name not in entries:
            continue
        if name == "splade" and "sparse" in entries and entries[name].get("doc_side"):
            fields[name] = "sparse"
        else:
            fields[name] = name
    if not fields:
        raise InputError(
            "--backend milvus needs at least one of sparse, splade, dense in --retrievers "
            "(bm25 and interests stay local)"
        )
    return fields


def _load_sources(
    root: Path, entries: Mapping[str, dict[str, Any]], fields: Mapping[str, str], n: int
) -> _Sources:
    sparse, empty = {}, {}
    for name, field in fields.items():
        if name == "dense" or field in sparse:
            continue
        vocab = int(entries[name]["vocab_size"])
        sparse[field] = csr_from_postings(root / name, n, vocab)
        empty[field] = vocab
    dense = None
    if "dense" in fields:
        dense = np.load(root / "dense" / "vectors.npy", mmap_mode="r")
    return _Sources(sparse, empty, dense)


def _schema(fields: Mapping[str, str], dim: int | None) -> Any:
    dt = pymilvus().DataType
    schema = pymilvus().MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", dt.INT64, is_primary=True)
    schema.add_field("doc_id", dt.VARCHAR, max_length=1024)
    schema.add_field("title", dt.VARCHAR, max_length=VARCHAR_BYTES)
    schema.add_field("text", dt.VARCHAR, max_length=VARCHAR_BYTES)
    for field in sorted(set(fields.values())):
        if field == "dense":
            schema.add_field("dense", dt.FLOAT_VECTOR, dim=dim)
        else:
            schema.add_field(field, dt.SPARSE_FLOAT_VECTOR)
    return schema


def _index_params(milvus: Any, fields: Mapping[str, str], target: MilvusTarget) -> Any:
    params = milvus.prepare_index_params()
    for field in sorted(set(fields.values())):
        if field == "dense":
            kind = target.dense_index.upper()
            build = {k: v for k, v in DENSE_DEFAULTS[target.dense_index].items() if k != "ef"}
            if kind == "IVF_FLAT":
                build = {"nlist": 128}
            params.add_index("dense", index_type=kind, metric_type="IP", params=build)
        else:
            params.add_index(field, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    return params


def _rows(docs: DocStore, src: _Sources, start: int, stop: int) -> Iterator[dict[str, Any]]:
    for i in range(start, stop):
        doc = docs.by_ordinal(i)
        row: dict[str, Any] = {
            "id": i,
            "doc_id": doc.doc_id,
            "title": _cut(doc.title),
            "text": _cut(doc.text),
        }
        for field, matrix in src.sparse.items():
            row[field] = sparse_row(matrix, i, src.empty_term[field])
        if src.dense is not None:
            row["dense"] = np.asarray(src.dense[i], dtype=np.float32).tolist()
        yield row


def _signature(name: str, fields: Mapping[str, str], entries: Mapping[str, Any], n: int) -> str:
    """What this push writes (fields, encoders, doc count): kept as the Milvus
    collection's ``twofold.signature`` property, so a rerun recognizes its own collection
    and refuses a foreign one."""
    what = {
        "fields": dict(fields),
        "encoders": {r: entries[r].get("encoder") for r in fields},
        "doc_count": n,
        "collection": name,
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    return f"twofold {digest}"


def push_to_milvus(
    root: Path,
    entries: Mapping[str, dict[str, Any]],
    docs: DocStore,
    target: MilvusTarget,
    out: Path,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Write the ``sparse``/``splade``/``dense`` sub-indexes under ``root`` (and the doc
    fields) into Milvus; returns the new manifest entries (``backend: milvus``). The local
    arrays stay until :func:`drop_local_vectors`."""
    fields = _plan(root, entries)
    name = target.name_for(out)
    n = len(docs)
    signature = _signature(name, fields, entries, n)
    milvus = client(target.uri)
    state_file = root / STATE
    state: dict[str, Any] = {"uri": target.uri, "collection": name, "signature": signature}
    state["done"] = 0
    try:
        old = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError):
        old = None
    description = _signature_of(milvus, name, target.uri)
    exists = description is not None
    resume = (
        description == signature
        and isinstance(old, dict)
        and {k: old.get(k) for k in ("uri", "collection", "signature")}
        == {k: state[k] for k in ("uri", "collection", "signature")}
    )
    if resume and isinstance(old, dict):
        state["done"] = int(old.get("done", 0))
        log.info("milvus: resuming %s after %d of %d rows", name, state["done"], n)
    else:
        if exists:
            log.info("milvus: replacing Twofold collection %s", name)
            milvus.drop_collection(name)
        src_dim = _dense_dim(root, fields)
        milvus.create_collection(
            name,
            schema=_schema(fields, src_dim),
            index_params=_index_params(milvus, fields, target),
            properties={SIGNATURE: signature},
        )
    state_file.write_text(json.dumps(state))
    src = _load_sources(root, entries, fields, n)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=int(state["done"]), desc="milvus: write", unit="doc")
    while int(state["done"]) < n:
        start = int(state["done"])
        stop = min(n, start + target.batch_size)
        try:
            milvus.upsert(name, list(_rows(docs, src, start, stop)))
        except Exception as exc:
            raise CollectionError(
                f"writing rows {start}-{stop} to Milvus collection {name!r} failed: {exc}; "
                "rerun the same command to resume"
            ) from exc
        state["done"] = stop
        state_file.write_text(json.dumps(state))
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    milvus.flush(name)
    milvus.load_collection(name)
    count = int(milvus.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"])
    if count != n:
        raise CollectionError(f"Milvus collection {name!r} holds {count} rows, expected {n}")
    return _entries(entries, fields, target, name)


def _dense_dim(root: Path, fields: Mapping[str, str]) -> int | None:
    if "dense" not in fields:
        return None
    return int(np.load(root / "dense" / "vectors.npy", mmap_mode="r").shape[1])


def _entries(
    entries: Mapping[str, dict[str, Any]],
    fields: Mapping[str, str],
    target: MilvusTarget,
    name: str,
) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in entries.items()}
    for retriever, field in fields.items():
        info: dict[str, Any] = {"uri": target.uri, "collection": name, "field": field}
        if retriever == "dense":
            info["index"] = {"type": target.dense_index, **DENSE_DEFAULTS[target.dense_index]}
            out[retriever].pop("index", None)  # the local FAISS index is not kept
        else:
            info["index"] = {"type": "sparse_inverted_index", "metric": "IP"}
            info["empty_term"] = int(entries[retriever]["vocab_size"])
        out[retriever]["backend"] = BACKEND
        out[retriever]["milvus"] = info
    return out


LOCAL_VECTOR_FILES = {
    "sparse": ("postings", "lucene"),
    "splade": ("postings", "lucene"),
    "dense": ("vectors.npy", "index.faiss"),
}


def drop_local_vectors(root: Path, entries: Mapping[str, dict[str, Any]]) -> None:
    """Remove what Milvus now serves (postings, Lucene impact index, vectors, FAISS);
    the manifest must already say ``backend: milvus``. Kept: doc ids, vocabulary, idf,
    tokenizer, encoder references."""
    for name, files in LOCAL_VECTOR_FILES.items():
        if entries.get(name, {}).get("backend") != BACKEND:
            continue
        for file in files:
            path = root / name / file
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    (root / STATE).unlink(missing_ok=True)


def push_collection(path: Path, target: MilvusTarget, progress: bool = True) -> Manifest:
    """Move a published, embedded collection's sparse/splade/dense vectors into Milvus
    (``twofold index push``): write them, then swap in the manifest that says
    ``backend: milvus`` (atomic), then drop the local arrays. Rerunning after a crash
    resumes the write."""
    manifest = read_manifest(path)
    if any(e.get("backend") == BACKEND for e in manifest.sub_indexes.values()):
        raise InputError(f"{path} is already served by Milvus")
    check_milvus_target(target, list(manifest.sub_indexes), path)
    docs = DocStore(path / "docs")
    try:
        entries = push_to_milvus(path, manifest.sub_indexes, docs, target, path, progress)
    finally:
        docs.close()
    pushed = replace(manifest, sub_indexes=entries)
    write_manifest(path, pushed)
    drop_local_vectors(path, entries)
    return pushed
