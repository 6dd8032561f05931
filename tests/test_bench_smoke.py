"""``make bench-smoke``: the synthetic sparse benchmark end to end on 1,000 documents
(native + seismic; Lucene is left to ``make bench``), and its BENCHMARKS.md section
rendered from the result file. Asserts shapes and exactness, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sparse-synthetic-smoke.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_sparse_synthetic.py"), "--smoke"]
    subprocess.run([*cmd, "--engines", "seismic", "--out", str(out)], check=True, cwd=ROOT)
    report = json.loads(out.read_text())
    assert {"command", "date", "machine"} <= set(report)
    (row,) = report["results"]
    assert row["docs"] == 1000
    assert row["native"]["top10_overlap"] == 1.0  # exact against itself
    assert 0.0 <= row["seismic"]["top10_overlap"] <= 1.0
    for engine in ("native", "seismic"):
        assert row[engine]["disk_bytes"] > 0 and row[engine]["peak_rss_bytes"] > 0

    from bench.report import render, sparse_synthetic

    table = sparse_synthetic([report])
    assert "| 1,000 | seismic |" in table and report["command"] in table
    doc = "a\n<!-- generated:sparse-synthetic -->\nold\n<!-- /generated -->\nb\n"
    assert "old" not in render(doc) and render(doc).startswith("a\n")
