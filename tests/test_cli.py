"""The ``twofold`` command line, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def twofold(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twofold.app.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cran"
    done = twofold("index", "build", "data/cranfield", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "1400 documents" in done.stdout
    return out


def test_help_explains_commands() -> None:
    done = twofold("--help")
    assert done.returncode == 0
    for command in ("models", "index", "search", "eval"):
        assert command in done.stdout
    build = twofold("index", "build", "--help")
    assert "--skip-invalid" in build.stdout and "resume" in build.stdout


def test_inspect_and_search(sample: Path) -> None:
    inspect = twofold("index", "inspect", str(sample))
    assert inspect.returncode == 0 and "documents    1400" in inspect.stdout
    raw = json.loads(twofold("index", "inspect", str(sample), "--json").stdout)
    assert raw["doc_count"] == 1400
    found = twofold("search", str(sample), "buckling of cylindrical shells", "--json", "--k", "3")
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and hits[0]["rank"] == 1
    assert "buckling" in (hits[0]["title"]).lower()


def test_eval_writes_json(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = twofold("eval", str(sample), "--dataset", "data/cranfield", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "nDCG@10" in done.stdout
    assert json.loads(out.read_text())["pipelines"]["bm25"]["queries"] == 225


def test_errors_are_clear_and_exit_2(sample: Path, tmp_path: Path) -> None:
    cases = [
        (
            ("index", "build", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")),
            "does not exist",
        ),
        (("search", str(sample), "x", "--pipeline", "nope"), "unknown pipeline 'nope'"),
        (("search", str(sample), "   "), "the query is empty"),
        (("search", str(tmp_path), "x"), "no manifest.json"),
        (("eval", str(sample), "--dataset", "data/cranfield", "--split", "dev"), "available: test"),
        (("models", "fetch", "bert"), "unknown model 'bert'"),
        (
            ("eval", str(sample), "--dataset", "data/cranfield", "--max-queries", "-1"),
            "--max-queries must be >= 1",
        ),
        (
            (
                "eval",
                str(sample),
                "--dataset",
                "data/cranfield",
                "--out",
                str(tmp_path / "no/r.json"),
            ),
            "does not exist",
        ),
        (
            ("index", "build", "data/cranfield", "--out", str(tmp_path / "o"), "--max-docs", "0"),
            "--max-docs must be >= 1",
        ),
    ]
    for args, message in cases:
        done = twofold(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
    assert not (tmp_path / "o").exists() and not (tmp_path / "no").exists()


def test_output_piped_into_head_is_not_an_error(sample: Path) -> None:
    cmd = f"{sys.executable} -m twofold.app.cli search {sample} heat --k 200 --json | head -1"
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.stdout.strip() == "[" and "Traceback" not in done.stderr
