"""``twofold index verify DIR`` checks every file against the sizes and sha256 the build
recorded in the manifest; the service refuses a collection that fails (a clear error,
at load and at reload) and keeps serving the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.test_api import run_in_thread
from twofold.app.settings import Settings
from twofold.app.state import load_state
from twofold.core.errors import CollectionError
from twofold.indexing.build import build_collection
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.manifest import read_manifest
from twofold.indexing.verify import sha256_file, verify_collection

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def two(tiny_corpus: Path, tmp_path: Path) -> tuple[Path, Path]:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for out in (good, bad):
        build_collection(tiny_corpus, out, BuildOptions(progress=False))
    return good, bad


def verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "twofold.app.cli", "index", "verify", *args]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_build_records_every_file_and_verify_checks_them(two: tuple[Path, Path]) -> None:
    good, bad = two
    files = read_manifest(good).files
    assert "docs/docs.jsonl" in files and any(f.startswith("bm25/lucene/") for f in files)
    on_disk = {p.relative_to(good).as_posix() for p in good.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    assert set(files) == on_disk
    for rel, want in files.items():
        assert want == {"size": (good / rel).stat().st_size, "sha256": sha256_file(good / rel)}

    ok = verify_cli(str(good))
    assert ok.returncode == 0 and f"ok: {len(files)} files" in ok.stdout, ok.stderr

    flip_a_byte(bad / "docs" / "docs.jsonl")  # same size, other bytes
    (
        bad / "bm25" / "lucene" / sorted(p.name for p in (bad / "bm25" / "lucene").iterdir())[0]
    ).unlink()
    failed = verify_cli(str(bad))
    assert failed.returncode == 1
    assert "FAIL docs/docs.jsonl: sha256 differs" in failed.stdout
    assert ": missing" in failed.stdout
    sizes = verify_collection(bad, "sizes")  # a same-size change needs the hash
    assert not any("docs.jsonl" in p for p in sizes.problems)


def test_the_service_refuses_a_damaged_collection_and_serves_the_others(
    two: tuple[Path, Path],
) -> None:
    good, bad = two
    flip_a_byte(bad / "docs" / "docs.jsonl")
    with pytest.raises(CollectionError, match=r"bad failed verification: docs/docs.jsonl"):
        load_state(Settings(collections=[bad], warmup=False))

    settings = Settings(collections=[bad, good], warmup=False, admin_key="admin-key-0123456789")
    with run_in_thread(settings) as base:
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["collections"] == ["good"]
        assert "failed verification: docs/docs.jsonl: sha256 differs" in ready["refused"]["bad"]
        hits = httpx.post(f"{base}/v1/search", json={"query": "heat transfer"}).json()["hits"]
        assert hits[0]["doc_id"] == "d1"
        missing = httpx.post(f"{base}/v1/search", json={"query": "heat", "collection": "bad"})
        assert missing.status_code == 404
        # damage found at reload: the reload is refused, the loaded collection keeps serving
        flip_a_byte(good / "docs" / "docs.jsonl")
        admin = {"Authorization": "Bearer admin-key-0123456789"}
        reload = httpx.post(f"{base}/v1/collections/good/reload", headers=admin, timeout=60)
        assert reload.status_code == 503 and "failed verification" in reload.json()["detail"]
        again = httpx.post(f"{base}/v1/search", json={"query": "heat transfer"})
        assert again.status_code == 200 and again.json()["hits"][0]["doc_id"] == "d1"
