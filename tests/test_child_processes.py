"""Children started by the build (the Anserini JVM) next to a live gRPC client, as in a
process that also talks to Milvus: starting a child must never abort it.

With a ``preexec_fn`` hook the forked child runs Python's at-fork handlers, gRPC's among
them, and about one start in thirty died with SIGABRT ("epoll_wait error: Bad file
descriptor"); that failed two builds in a full test run.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from twofold.indexing.lucene.jvm import die_with_parent


def test_children_start_cleanly_beside_a_live_grpc_channel() -> None:
    grpc = pytest.importorskip("grpc")
    channel = grpc.insecure_channel("127.0.0.1:9")  # nothing listens: the poller keeps trying
    try:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=0.3)
        codes = [
            subprocess.run(die_with_parent(["true"]), capture_output=True).returncode
            for _ in range(150)
        ]
    finally:
        channel.close()
    assert codes == [0] * 150


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv not installed")
def test_the_child_is_asked_to_die_with_its_parent() -> None:
    cmd = die_with_parent(["java", "-version"])
    assert cmd[1:4] == ["--pdeathsig", "KILL", "java"]
