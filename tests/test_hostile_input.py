"""Hostile input: path tricks in collection names and doc ids (``../``, absolute paths,
NUL bytes), huge bodies and queries, malformed corpus lines. Each gets a 4xx (real
server) or a ``file:line`` error (build, CLI), and nothing changes on disk: the files
and mtimes under the test's directory are the same before and after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.test_api import run_in_thread
from twofold.app.schemas import MAX_BATCH
from twofold.app.settings import Settings
from twofold.core.errors import CorpusError
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "admin-key-0123456789"
OPTS = BuildOptions(retrievers=("bm25",), progress=False)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and link under ``root``: (size, mtime in ns)."""
    return {
        p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
    }


TRICKS = ["../col", "..%2Fcol", "/etc/passwd", "col\x00", "%00", "col/../col", "." * 300]


def test_path_tricks_and_huge_inputs_get_4xx_and_change_nothing(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    col = tmp_path / "col"
    build_collection(tiny_corpus, col, OPTS)
    before = snapshot(tmp_path)
    settings = Settings(collections=[col], warmup=False, admin_key=ADMIN)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    answers: list[tuple[str, int]] = []
    with run_in_thread(settings) as base, httpx.Client(base_url=base, timeout=60) as http:

        def check(what: str, response: httpx.Response) -> None:
            answers.append((what, response.status_code))

        for trick in TRICKS:
            check(
                f"search collection={trick!r}",
                http.post("/v1/search", json={"query": "heat", "collection": trick}),
            )
            check(
                f"doc collection={trick!r}", http.get("/v1/docs/d1", params={"collection": trick})
            )
            check(f"doc id {trick!r}", http.get(f"/v1/docs/{quote(trick)}"))
            check(
                f"reload {trick!r}",
                http.post(f"/v1/collections/{quote(trick, safe='')}/reload", headers=admin),
            )
        for doc_id in ("../../manifest.json", "/etc/passwd", "d1\x00", "..%2F..%2Fmanifest.json"):
            check(f"doc id {doc_id!r}", http.get(f"/v1/docs/{quote(doc_id)}"))
        check("NUL query", http.post("/v1/search", json={"query": "heat\x00transfer" * 200}))
        check("huge query", http.post("/v1/search", json={"query": "heat " * 20_000}))
        check(
            "huge body",
            http.post(
                "/v1/search",
                content=b'{"query": "' + b"a" * (2 << 20) + b'"}',
                headers={"Content-Type": "application/json"},
            ),
        )
        # under the body limit, so that the batch cap is what refuses it, and says so
        batch = http.post("/v1/search/batch", json={"searches": [{"query": "heat"}] * 1000})
        check("huge batch", batch)
        assert batch.status_code == 422, batch.text
        assert f"at most {MAX_BATCH} items" in batch.json()["detail"], batch.text
        just = http.post("/v1/search/batch", json={"searches": [{"query": "heat"}] * MAX_BATCH})
        assert just.status_code == 200 and len(just.json()["results"]) == MAX_BATCH, just.text
        check(
            "not json",
            http.post(
                "/v1/search", content=b"\x00\xff{", headers={"Content-Type": "application/json"}
            ),
        )
        assert http.post("/v1/search", json={"query": "heat transfer"}).status_code == 200
    wrong = [(what, code) for what, code in answers if not 400 <= code < 500]
    assert wrong == [], wrong
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{broken", "JSON"),
        (json.dumps({"title": "no id", "text": "x"}), "_id"),
        (json.dumps({"_id": "", "text": "x"}), "empty id"),
        (json.dumps(["a", "list"]), ""),
        ("\x00\x00\x00", ""),
    ],
)
def test_a_malformed_corpus_line_is_named_and_changes_nothing(
    tmp_path: Path, tiny_corpus: Path, line: str, why: str
) -> None:
    col = tmp_path / "col"
    build_collection(tiny_corpus, col, OPTS)
    bad = tmp_path / "bad.jsonl"
    docs = tiny_corpus.read_text().splitlines()
    bad.write_text("\n".join([*docs[:3], line, *docs[3:]]) + "\n")
    before = snapshot(tmp_path)
    with pytest.raises(CorpusError, match=rf"bad\.jsonl:4\b.*{why}"):
        build_collection(bad, col, OPTS)
    assert snapshot(tmp_path) == before


def test_the_cli_names_the_bad_line_and_refuses_path_tricks(
    tmp_path: Path, tiny_corpus: Path
) -> None:
    col = tmp_path / "col"
    build_collection(tiny_corpus, col, OPTS)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(tiny_corpus.read_text() + "{broken\n")
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "twofold.app.cli", *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )

    built = cli("index", "build", str(bad), "--out", "col", "--retrievers", "bm25", "--quiet")
    assert built.returncode == 2 and "bad.jsonl:6" in built.stderr, built.stderr
    for trick in ("../col", "/nonexistent/col", "col/../../col"):
        verified = cli("index", "verify", trick)
        assert verified.returncode != 0, (trick, verified.stdout)
        assert "Traceback" not in verified.stderr, verified.stderr
    assert snapshot(tmp_path) == before
