"""A second build into the same ``--out`` is refused while one runs (an ``fcntl`` lock
beside the partial directory), with a message naming the holder; nothing is written by
the refused build. A killed build leaves no stale lock (the kernel drops it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from twofold.indexing.build import BuildLocked, build_collection, build_lock, lock_path
from twofold.indexing.buildctx import BuildOptions
from twofold.indexing.manifest import read_manifest

ROOT = Path(__file__).resolve().parent.parent
OPTS = BuildOptions(retrievers=("bm25",), progress=False)


def cli_build(corpus: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "twofold.app.cli", "index", "build", str(corpus)]
    cmd += ["--out", str(out), "--retrievers", "bm25", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_a_second_build_into_the_same_out_is_refused(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "col"
    with build_lock(out):  # a build into ``out`` is running in this process
        refused = cli_build(tiny_corpus, out)
        assert refused.returncode == 2
        assert f"another build into {out} is running (process {os.getpid()} holds" in (
            refused.stderr
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == [".col.lock", "corpus.jsonl"]
        with pytest.raises(BuildLocked):  # in-process too (another open file description)
            build_collection(tiny_corpus, out, OPTS)
        # another --out is not held up
        assert cli_build(tiny_corpus, tmp_path / "other").returncode == 0
    done = cli_build(tiny_corpus, out)
    assert done.returncode == 0, done.stderr
    assert read_manifest(out).doc_count == 5
    assert not lock_path(out).exists()


def test_a_killed_build_leaves_no_stale_lock(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "col"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from twofold.indexing.build import build_lock\n"
            "with build_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BuildLocked, match=f"process {holder.pid} holds"):
            build_collection(tiny_corpus, out, OPTS)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert lock_path(out).exists()  # killed: the file stays, the lock does not
    build_collection(tiny_corpus, out, OPTS)
    assert read_manifest(out).doc_count == 5 and not lock_path(out).exists()
