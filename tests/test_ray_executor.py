"""``twofold index build --executor ray``: the encoding as Ray Data ``map_batches`` on a
2-worker Ray cluster, strictly on loopback, gives the shards of the local build.

The cluster: two Ray nodes of one CPU each (``ray start --head`` and a second ``ray
start --address``), so two encoder actors, one per node. Ray advertises the machine's
address, so the cluster, and the build that joins it (``--ray-address``), run inside a
network namespace that has only ``lo`` (created here with ``ip netns add`` and deleted
afterwards, also on failure) and inside a PID namespace of their own (``unshare
--pid``), so that ``ray stop`` there sees only this cluster's processes and whatever Ray
leaves behind dies with the namespace. Where namespaces are not permitted (not root,
``ip`` or ``unshare`` missing, EPERM), the test is skipped with the reason.

The corpus: the first 200 documents of the embedded Cranfield sample (``--max-docs
200``; the whole 1,400 would take minutes on 2 cores), ``--max-length 128``, retrievers
``sparse`` (inference-free, splade-tiny document encoder) and ``dense`` (MiniLM-L6):
the two encoders the executor runs (``splade`` runs the ``sparse`` builder's code, and
with the same model it copies the ``sparse`` documents instead of encoding them).
``--shard-size 50`` cuts each into 4 shards of one chunk each, so both actors get work,
and the sparse engines are ``native`` only (``--sparse-engines ""``): Lucene and Seismic
are built afterwards from the shards by the same code whichever executor encoded them,
and their files hold random segment ids.

What is compared: the build removes its shards once merged, so the test compares what
is made of them, byte for byte: ``dense/vectors.npy`` is the shards' rows copied in
order, ``sparse/forward/`` and ``sparse/postings/`` their CSR rows and columns,
``sparse/idf.npy`` their document frequencies; every other file of both sub-indexes
too. (Shard files themselves are ``.npz`` zips with a write time in them.)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLE
from twofold.app.cli import main
from twofold.core.errors import CollectionError, DependencyError, InputError
from twofold.indexing.build import lock_path, partial_dir
from twofold.indexing.buildctx import ExecutorOptions
from twofold.indexing.encoding import Chunk, by_shard, shard_chunks
from twofold.indexing.ray_executor import check_ray_installed, plan_actors

BUILD = [
    "--retrievers", "sparse,dense", "--max-docs", "200", "--max-length", "128",
    "--shard-size", "50", "--sparse-engines", "", "--device", "cpu", "--quiet",
]  # fmt: skip
PORT = 6390  # inside the namespace nothing else listens


# ----------------------------------------------------------------- without a cluster
def test_the_chunk_plan_restarts_at_each_shard() -> None:
    # 10 docs, shards of 4, chunks of 3: shards [0,4) [4,8) [8,10); shard 0 is done
    assert shard_chunks(10, 4, 3, [1, 2]) == [Chunk(1, 4, 7), Chunk(1, 7, 8), Chunk(2, 8, 10)]
    assert shard_chunks(10, 4, 8, range(3)) == [Chunk(0, 0, 4), Chunk(1, 4, 8), Chunk(2, 8, 10)]
    assert shard_chunks(10, 4, 3, []) == []


def test_outputs_are_grouped_per_shard_and_must_come_in_plan_order() -> None:
    chunks = shard_chunks(10, 4, 3, [1, 2])
    out = [(c, {"n": np.asarray([c.size])}) for c in chunks]
    groups = [(i, [int(o["n"][0]) for o in outs]) for i, outs in by_shard(out, chunks)]
    assert groups == [(1, [3, 1]), (2, [2])]
    with pytest.raises(CollectionError, match="out of order"):
        list(by_shard([out[1], out[0], out[2]], chunks))
    with pytest.raises(CollectionError, match="fewer chunks"):
        list(by_shard(out[:2], chunks))


def test_actors_are_sized_by_the_cluster() -> None:
    ray = ExecutorOptions("ray")
    assert plan_actors({"CPU": 2.0}, ray, "auto") == ("cpu", 2)
    assert plan_actors({"CPU": 16.0, "GPU": 4.0}, ray, "auto") == ("cuda", 4)
    assert plan_actors({"CPU": 16.0, "GPU": 4.0}, ray, "cpu") == ("cpu", 16)
    assert plan_actors({"CPU": 2.0, "GPU": 4.0}, ray, "cuda") == ("cuda", 2)
    assert plan_actors({"CPU": 8.0}, ExecutorOptions("ray", actors=3), "auto") == ("cpu", 3)
    with pytest.raises(InputError, match="--ray-actors 3: the Ray cluster holds 2"):
        plan_actors({"CPU": 2.0}, ExecutorOptions("ray", actors=3), "auto")
    with pytest.raises(InputError, match="--device cuda was asked for, but the Ray cluster"):
        plan_actors({"CPU": 2.0}, ray, "cuda")
    with pytest.raises(InputError, match="no room for an encoder actor"):
        plan_actors({"CPU": 0.0}, ray, "auto")


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--ray-actors", "2"], "--ray-address and --ray-actors need --executor ray"),
        (["--executor", "ray", "--ray-actors", "0"], "--ray-actors must be >= 1"),
        (["--shard-size", "0"], "--shard-size must be >= 1"),
    ],
)
def test_bad_executor_flags_are_refused_before_anything_is_written(
    flags: list[str],
    words: str,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "col"
    argv = ["index", "build", str(tiny_corpus), "--out", str(out), "--retrievers", "sparse"]
    assert main([*argv, "--quiet", *flags]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists() and not partial_dir(out).exists() and not lock_path(out).exists()


def test_without_ray_installed_the_build_says_what_to_install(
    tiny_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when it is absent
    with pytest.raises(DependencyError, match=r"pip install 'twofold\[ray\]'"):
        check_ray_installed()
    out = tmp_path / "col"
    argv = ["index", "build", str(tiny_corpus), "--out", str(out), "--executor", "ray"]
    assert main([*argv, "--retrievers", "sparse", "--quiet"]) == 2
    assert "--executor ray needs Ray Data" in capsys.readouterr().err
    assert not out.exists() and not partial_dir(out).exists()


# ------------------------------------------------------------ a 2-node loopback cluster
def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


@pytest.fixture
def loopback_netns() -> Iterator[str]:
    """A network namespace with only ``lo`` (up), deleted afterwards; skips the test
    with the reason where namespaces are not permitted."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add); not root here")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: cannot make a loopback-only namespace")
    name = f"twofold-ray-{os.getpid()}"
    added = _run("ip", "netns", "add", name)
    if added.returncode != 0:
        pytest.skip(f"ip netns add is not permitted here: {added.stderr.strip()}")
    try:
        up = _run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        pid_ns = _run(
            "ip", "netns", "exec", name, "unshare", "--pid", "--fork", "--mount-proc", "true"
        )
        for step, done in (("ip link set lo up", up), ("unshare --pid", pid_ns)):
            if done.returncode != 0:
                pytest.skip(f"{step} in a namespace is not permitted: {done.stderr.strip()}")
        yield name
    finally:
        _run("ip", "netns", "delete", name)


def _cluster_script(corpus: Path, out: Path, temp: Path) -> str:
    """Start a head and a worker node (one CPU each) on 127.0.0.1, build with
    ``--executor ray`` against them, stop them."""
    bin_dir = Path(sys.executable).parent
    ray, address = bin_dir / "ray", f"127.0.0.1:{PORT}"
    node = "--node-ip-address=127.0.0.1 --num-cpus=1 --num-gpus=0 --disable-usage-stats"
    store = "--object-store-memory=100000000"  # 100 MB each: a shared 24 GB machine
    build = " ".join(f"'{a}'" for a in BUILD)
    return f"""set -eu
trap '{ray} stop --force >/dev/null 2>&1 || true' EXIT
echo '== links'; ip -o link show
{ray} start --head --port={PORT} {node} {store} --include-dashboard=false --temp-dir={temp} >&2
{ray} start --address={address} {node} {store} >&2
{sys.executable} -m twofold.app.cli index build {corpus} --out {out} {build} \\
    --executor ray --ray-address {address}
echo '== status'; {ray} status --address={address}
{ray} stop >&2
"""


def _subindex_files(root: Path) -> dict[str, bytes]:
    """Every file of the ``sparse`` and ``dense`` sub-indexes but the manifest entries
    (they hold timings); hardlinked model files included."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for name in ("sparse", "dense")
        for p in sorted((root / name).rglob("*"))
        if p.is_file() and p.name != ".complete.json"
    }


@pytest.mark.slow
def test_a_ray_build_on_a_loopback_cluster_writes_the_local_builds_shards(
    loopback_netns: str, tmp_path: Path
) -> None:
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert main(["index", "build", str(SAMPLE), "--out", str(local), *BUILD]) == 0

    temp = Path(tempfile.mkdtemp(prefix="tfray-", dir="/tmp"))  # Ray's socket paths are short
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAY_AUTH_MODE": "token",  # this cluster's own token: nothing in ~/.ray
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    cmd = ["ip", "netns", "exec", loopback_netns]
    cmd += ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
    cmd += ["bash", "-c", _cluster_script(SAMPLE, on_ray, temp)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log = done.stdout + done.stderr
    print(done.stdout[-3000:])  # the namespace's links and `ray status` (pytest -s shows it)
    assert done.returncode == 0, log[-6000:]

    links, status = done.stdout.split("== status")
    assert re.findall(r"^\d+: (\S+): <", links, re.M) == ["lo"]  # only loopback in there
    active = status.split("Active:")[1].split("Pending:")[0]
    assert len(re.findall(r"^ 1 node_[0-9a-f]+$", active, re.M)) == 2, status  # 2 nodes

    manifest = json.loads((on_ray / "manifest.json").read_text())
    assert manifest["build"]["executor"] == {"kind": "ray", "device": "cpu", "actors": 2}
    assert {manifest["sub_indexes"][n]["executor"] for n in ("sparse", "dense")} == {"ray"}
    reference = json.loads((local / "manifest.json").read_text())
    assert reference["build"]["executor"]["kind"] == "local"

    ours, theirs = _subindex_files(on_ray), _subindex_files(local)
    assert sorted(ours) == sorted(theirs)
    assert [f for f in ours if ours[f] != theirs[f]] == []
    vectors = np.load(on_ray / "dense" / "vectors.npy")
    assert vectors.shape == (200, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)  # real encodings
    weights = np.load(on_ray / "sparse" / "forward" / "weights.npy")
    assert weights.size > 200 * 10 and (weights > 0).all()
    for name in ("sparse", "dense"):
        assert not (on_ray / name / "shards").exists()  # merged, then removed
