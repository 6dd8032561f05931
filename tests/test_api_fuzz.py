"""The API contract, checked by a schema fuzzer: ``schemathesis run --checks all``
against a real ``twofold serve`` on 127.0.0.1, bounded in examples and time; 0 failures.

The server has an API key (sent by the fuzzer), a reranker and the sample collection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_api import ROOT, free_port, sample_collection, tiny_reranker, wait_ready

__all__ = ["sample_collection", "tiny_reranker"]  # session fixtures shared with test_api
KEY = "fuzz-key-0123456789"
MAX_EXAMPLES = 25
MAX_TIME_S = 30


@pytest.fixture
def fuzz_server(
    sample_collection: Path, tiny_reranker: Path, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "TWOFOLD_API_KEY": KEY}
    cmd = [sys.executable, "-m", "twofold.app.cli", "serve", str(sample_collection)]
    cmd += ["--port", str(port), "--reranker", str(tiny_reranker)]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_schemathesis_finds_no_failures(fuzz_server: tuple[str, Path], tmp_path: Path) -> None:
    base, log = fuzz_server
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is a dev dependency (pip install -e '.[dev]')"
    cmd = [exe, "run", f"{base}/openapi.json", "--checks", "all"]
    cmd += ["--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S)]
    cmd += ["--seed", "1", "--workers", "1", "--phases", "examples,coverage,fuzzing"]
    cmd += ["-H", f"Authorization: Bearer {KEY}", "--request-timeout", "30"]
    cmd += ["--suppress-health-check", "all", "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=MAX_TIME_S + 60, cwd=tmp_path, env=env
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "Traceback" not in log.read_text()
