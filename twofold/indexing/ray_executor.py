"""The Ray executor of a build's document encoding (``twofold index build --executor ray``).

The builder's chunk plan (``encoding.shard_chunks``) becomes a Ray Dataset with one row
per chunk (``start``, ``stop``, ``texts``), and ``map_batches`` (one row per call) runs
it through a fixed pool of actors. Each actor loads the builder's ``EncoderRecipe`` once
(with ``num_gpus=1`` on its GPU when the cluster has GPUs and ``--device`` is not
``cpu``; else on one CPU), first checking that the weights it finds under the model's
name are those the driver hashed. Rows come back in plan order (``preserve_order``),
and the driver writes the shards as the local executor does: the same chunks, so the
same batches, through the same code. Nothing here shards, schedules or retries work:
Ray Data does.

What crosses the cluster: the driver puts each chunk's texts into the object store
(``ray.put``, one block per chunk; Ray spills to disk when it is full), so workers need
no access to the build directory, and the outputs (CSR parts, vectors) come back the
same way. Every node needs twofold and the models installed (``twofold models fetch``);
a model given as a directory must sit at the same path on every node.

Connection (``ray_session``): ``ray.init(address=...)`` with ``--ray-address``; without
it ``ray.init()``, which joins ``$RAY_ADDRESS`` when that is set and otherwise starts a
local cluster on this machine for the build. ``ray.shutdown()`` when the build ends
(a cluster the build started stops with it).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from twofold.core.errors import DependencyError, InputError, ModelError, TwofoldError
from twofold.indexing.buildctx import ExecutorOptions
from twofold.indexing.docstore import DocStore
from twofold.indexing.encoding import (
    Chunk,
    ChunkEncoder,
    EncoderRecipe,
    Outputs,
    chunk_texts,
    doc_progress,
)

log = logging.getLogger(__name__)
KEYS = ("start", "stop")  # the columns that name a chunk, beside its outputs
INSTALL = "pip install 'twofold[ray]' (ray[data]==2.60.0)"


class RayEncodingError(TwofoldError):
    """The encoding failed on the Ray cluster (an actor died, a worker lacks a model)."""


def check_ray_installed() -> None:
    """Refuse ``--executor ray`` before anything is written when Ray Data is missing."""
    missing = [m for m in ("ray", "pyarrow", "pandas") if importlib.util.find_spec(m) is None]
    if missing:
        raise DependencyError(
            f"--executor ray needs Ray Data ({', '.join(missing)} missing): {INSTALL}"
        )


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise DependencyError(f"--executor ray needs Ray Data: {INSTALL}") from exc
    return ray


def plan_actors(
    resources: Mapping[str, float], options: ExecutorOptions, device: str
) -> tuple[str, int]:
    """(actor device, actor count) for a cluster of ``resources`` (``ray.cluster_resources``)
    and ``--device`` ``device``: GPU actors (one GPU and one CPU each) when the cluster has
    GPUs and ``device`` is not ``cpu``, else CPU actors (one CPU each); as many as fit
    unless ``--ray-actors`` says fewer. Raises ``InputError`` when none or not that many
    fit, or when ``cuda`` is asked of a cluster without GPUs."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "cuda" and gpus < 1:
        raise InputError("--device cuda was asked for, but the Ray cluster has no GPU")
    gpu = device != "cpu" and gpus >= 1
    capacity = min(gpus, cpus) if gpu else cpus
    what = "a GPU and a CPU" if gpu else "a CPU"
    if capacity < 1:
        raise InputError(f"the Ray cluster has no room for an encoder actor ({what} each)")
    actors = options.actors if options.actors is not None else capacity
    if actors > capacity:
        raise InputError(
            f"--ray-actors {actors}: the Ray cluster holds {capacity} encoder actors "
            f"({what} each; it has {cpus} CPUs and {gpus} GPUs)"
        )
    return ("cuda" if gpu else "cpu"), actors


class _EncodeActor:
    """A Ray Data actor: the recipe loaded once, then one chunk per call."""

    def __init__(self, recipe: EncoderRecipe, device: str) -> None:
        from twofold.models.registry import model_fingerprint

        found = model_fingerprint(recipe.model)["sha256"]
        if found != recipe.weights_sha256:
            raise ModelError(
                f"on Ray node {os.uname().nodename}: model {recipe.model!r} has weights "
                f"{found}, the driver has {recipe.weights_sha256}; install the same "
                "models on every node (twofold models fetch)"
            )
        self.encode: ChunkEncoder = recipe.load(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = [str(t) for t in batch["texts"][0]]
        outputs = self.encode(texts)
        rows = {"start": batch["start"], "stop": batch["stop"]}
        return rows | {name: array[np.newaxis] for name, array in outputs.items()}


class RayExecutor:
    """Encodes chunks as Ray Data ``map_batches`` over ``actors`` actors on ``device``."""

    kind = "ray"

    def __init__(self, device: str, actors: int, progress: bool = True) -> None:
        self.device, self.actors, self.progress = device, actors, progress

    def encode(
        self,
        docs: DocStore,
        recipe: EncoderRecipe,
        chunks: Sequence[Chunk],
        local: ChunkEncoder,
        desc: str,
    ) -> Iterator[tuple[Chunk, Outputs]]:
        """Each chunk's outputs, in the order of ``chunks`` (``local`` is not used)."""
        if not chunks:
            return
        ray = _ray()
        import pyarrow as pa

        refs = [
            ray.put(
                pa.table(
                    {
                        "start": pa.array([c.start], pa.int64()),
                        "stop": pa.array([c.stop], pa.int64()),
                        "texts": pa.array([chunk_texts(docs, recipe, c)], pa.list_(pa.string())),
                    }
                )
            )
            for c in chunks
        ]
        resources = {"num_gpus": 1, "num_cpus": 1} if self.device == "cuda" else {"num_cpus": 1}
        dataset = ray.data.from_arrow_refs(refs).map_batches(
            _EncodeActor,
            batch_size=1,
            batch_format="numpy",
            fn_constructor_kwargs={"recipe": recipe, "device": self.device},
            compute=ray.data.ActorPoolStrategy(size=min(self.actors, len(chunks))),
            **resources,
        )
        by_start = {c.start: c for c in chunks}
        total = sum(c.size for c in chunks)
        log.info("%s: %d chunks on %d Ray actors (%s)", desc, len(chunks), self.actors, self.device)
        with doc_progress(self.progress, desc, total) as advance:
            try:
                for row in dataset.iter_rows():
                    chunk = by_start[int(row["start"])]
                    outputs = {k: np.asarray(v) for k, v in row.items() if k not in KEYS}
                    yield chunk, outputs
                    advance(chunk.size)
            except TwofoldError:
                raise
            except Exception as exc:  # Ray wraps what failed in an actor or a worker
                raise RayEncodingError(f"{desc} on Ray failed: {exc}") from exc


@contextmanager
def ray_session(options: ExecutorOptions, device: str, progress: bool) -> Iterator[RayExecutor]:
    """Join (or start) the Ray cluster, size the actor pool (``plan_actors``), and
    disconnect when the build ends; before any encoding, so a wrong address or a cluster
    too small is refused first."""
    ray = _ray()
    where = options.address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
    try:
        ray.init(address=options.address, include_dashboard=False, logging_level=logging.WARNING)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError, by the cause
        raise InputError(f"--executor ray: cannot join the Ray cluster at {where}: {exc}") from exc
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows come back in plan order
        context.enable_progress_bars = False  # the build shows its own, in documents
        actor_device, actors = plan_actors(ray.cluster_resources(), options, device)
        log.info("Ray cluster %s: %d encoder actors on %s", where, actors, actor_device)
        yield RayExecutor(actor_device, actors, progress)
    finally:
        ray.shutdown()
