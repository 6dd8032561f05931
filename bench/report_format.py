"""What every generated section of BENCHMARKS.md shares: the result files and the
"Runs:" list that ends a section (``bench/report.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def run_line(report: dict[str, Any], note: str = "") -> str:
    """One "Runs:" line: the command, then its date and machine (and ``note``)."""
    extra = f"; {note}" if note else ""
    return f"- `{report['command']}` ({report['date']}, {report['machine']}{extra})"


def with_runs(lines: list[str], sources: list[str]) -> str:
    """A section: its lines, then the "Runs:" list of where its figures came from."""
    return "\n".join([*lines, "", "Runs:", *sources])


def load_results(prefix: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted(RESULTS.glob(f"{prefix}*.json")):
        data = json.loads(path.read_text())
        data["file"] = str(path.relative_to(ROOT))
        out.append(data)
    return out


def all_unseen(r: dict[str, Any]) -> str:
    """nDCG@10 on all queries / the unseen-document ones (none without a train split)."""
    return f"{r['all']:.4f}" + ("" if r.get("unseen") is None else f" / {r['unseen']:.4f}")
