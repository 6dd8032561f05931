"""What every benchmark's result file carries (command, date, machine), and how it is
written: indented JSON to ``--out`` (its folder made) and to stdout."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def provenance() -> dict[str, str]:
    """The command line that ran, the UTC time and the machine, for a result file."""
    return {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }


def write_report(report: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(report, indent=2) + "\n"
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    sys.stdout.write(text)
