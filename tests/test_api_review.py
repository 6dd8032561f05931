"""``GET /v1/docs/{doc_id}`` with ids that hold "/", through a real uvicorn on 127.0.0.1:
a small bm25 collection whose ids include ``a/b`` and ``x/y/z``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_api import expect, run_in_thread
from twofold.app.settings import Settings
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions

DOCS = [
    {"_id": "a/b", "title": "slashed", "text": "heat transfer in a boundary layer"},
    {"_id": "x/y/z", "title": "deeper", "text": "buckling of thin cylindrical shells"},
    {"_id": "plain", "title": "", "text": "lift and drag of swept wings"},
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slashed")
    corpus = root / "slashed.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    out: Path = root / "slashed"
    build_collection(corpus, out, BuildOptions(retrievers=("bm25",), progress=False))
    with run_in_thread(Settings(collections=[out], warmup=False)) as base:
        yield base


@pytest.mark.parametrize(
    ("path", "doc_id"),
    [
        ("/v1/docs/a%2Fb", "a/b"),
        ("/v1/docs/a/b", "a/b"),
        ("/v1/docs/x/y%2Fz", "x/y/z"),
        ("/v1/docs/plain", "plain"),
    ],
)
def test_doc_ids_with_slashes_are_fetched(base_url: str, path: str, doc_id: str) -> None:
    resp = httpx.get(f"{base_url}{path}", params={"collection": "slashed"})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["doc_id"] == doc_id and data["collection"] == "slashed"
    assert data["text"] == next(d["text"] for d in DOCS if d["_id"] == doc_id)


def test_a_path_like_id_is_only_an_unknown_id(base_url: str) -> None:
    resp = httpx.get(f"{base_url}/v1/docs/..%2F..%2Fetc%2Fpasswd")
    body = expect(resp, 404, "unknown doc id '../../etc/passwd'")
    assert body["code"] == "not_found"
    expect(httpx.get(f"{base_url}/v1/docs/a%2Fc"), 404, "unknown doc id 'a/c'")
