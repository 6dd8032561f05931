"""What the service loads once, in the lifespan: collections, their opened retrievers and
named pipelines, the reranker, and the bounded queue of pipeline threads
(``twofold.app.work.WorkQueue``) that runs pipelines under each request's ``Deadline``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twofold.app.metrics import Metrics
from twofold.app.settings import Settings
from twofold.app.work import BudgetExceeded, Deadline, Overloaded, WorkQueue
from twofold.core.errors import InputError, NotFoundError, UnknownNameError
from twofold.core.types import Query
from twofold.indexing.collection import Collection
from twofold.models.threads import set_torch_threads
from twofold.search.pipeline import (
    PIPELINES,
    Pipeline,
    Reranker,
    available_pipelines,
    build_pipeline,
    collection_retrievers,
)
from twofold.search.retrievers import RETRIEVERS, Retriever
from twofold.search.sparse import use_sparse_engine

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReloadInProgress(Exception):
    """A reload was asked for while another one runs (mapped to 409)."""


__all__ = [
    "AppState",
    "BudgetExceeded",
    "CollectionState",
    "Deadline",
    "Overloaded",
    "ReloadInProgress",
]


@dataclass
class CollectionState:
    collection: Collection
    retrievers: dict[str, Retriever]
    pipelines: dict[str, Pipeline]
    default_pipeline: str

    @property
    def name(self) -> str:
        return self.collection.name

    def pipeline(self, name: str) -> Pipeline:
        if name in self.pipelines:
            return self.pipelines[name]
        if name in PIPELINES and PIPELINES.get(name).rerank:
            build_pipeline(self.collection, name)  # raises: no reranker, says how to add one
        if name in PIPELINES:
            raise InputError(
                f"pipeline {name!r} cannot run on collection {self.name!r} (it has "
                f"{', '.join(self.collection.retrievers)}); available: "
                f"{', '.join(self.pipelines)}"
            )
        raise UnknownNameError("pipeline", name, list(self.pipelines))


@dataclass
class AppState:
    settings: Settings
    collections: dict[str, CollectionState]
    reranker: Reranker | None
    metrics: Metrics
    queue: WorkQueue
    ready: bool = False
    extras: dict[str, Any] = field(default_factory=dict)  # for optional routers
    reload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def default_collection(self) -> str:
        return next(iter(self.collections))

    def collection(self, name: str | None) -> CollectionState:
        key = name or self.default_collection
        if key not in self.collections:
            known = ", ".join(self.collections)
            raise NotFoundError(f"unknown collection {key!r}; known: {known}")
        return self.collections[key]

    def deadline(self, arrived: float, budget_s: float) -> Deadline:
        """The deadline of a request that arrived at ``arrived`` (``time.monotonic()``)."""
        return Deadline.start(arrived, budget_s, self.metrics.deadline_stops)

    async def run(self, deadline: Deadline, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a pipeline thread under ``deadline``: ``BudgetExceeded`` past
        it, ``Overloaded`` when every thread is busy and the queue is full."""
        try:
            return await self.queue.run(deadline, fn, *args)
        except Overloaded:
            self.metrics.shed.inc()
            raise


def load_reranker(settings: Settings) -> Reranker | None:
    if not settings.reranker:
        log.info("no reranker configured: +rerank pipelines are off (set --reranker DIR)")
        return None
    from twofold.models.reranker import RerankerConfig, load_reranker

    return load_reranker(
        RerankerConfig(
            settings.reranker,
            batch_size=settings.reranker_batch_size,
            max_length=settings.reranker_max_length,
        )
    )


def open_collection(
    collection: Collection, settings: Settings, reranker: Reranker | None
) -> CollectionState:
    """Open every retriever once and build every named pipeline the collection can run."""
    use_sparse_engine(collection, settings.sparse_engine)
    retrievers = {r: RETRIEVERS.get(r)(collection) for r in collection_retrievers(collection)}
    pipelines = {
        name: build_pipeline(
            collection,
            name,
            depth=settings.retrieve_depth,
            reranker=reranker,
            rerank_depth=settings.rerank_depth,
            opened=retrievers,
        )
        for name in available_pipelines(collection, with_reranker=reranker is not None)
    }
    if not pipelines:
        raise InputError(f"collection {collection.name!r} has no retriever the service can run")
    default = settings.default_pipeline
    if default not in pipelines:
        default = next(iter(pipelines))
    return CollectionState(collection, retrievers, pipelines, default)


def load_state(settings: Settings, metrics: Metrics | None = None) -> AppState:
    """Everything a request needs, loaded and (with ``warmup``) exercised once."""
    if not settings.collections:
        raise InputError("no collections to serve; give at least one collection directory")
    set_torch_threads(settings.torch_threads)  # once, before any model runs
    reranker = load_reranker(settings)
    collections = {}
    for path in settings.collections:
        state = open_collection(Collection(path), settings, reranker)
        collections[state.name] = state
    queue = WorkQueue(settings.search_threads, settings.max_queue)
    app_state = AppState(settings, collections, reranker, metrics or Metrics(), queue)
    if settings.warmup:
        t0 = time.perf_counter()
        for cs in collections.values():
            # on a pipeline thread: the JVM attaches there, models load their kernels
            queue.submit(warm_up, cs).result()
        log.info("warm-up done in %.2f s", time.perf_counter() - t0)
    app_state.ready = True
    return app_state


def warm_up(cs: CollectionState) -> None:
    for pipeline in cs.pipelines.values():
        pipeline.search(Query("warmup", "warm up"), 1)


def reload_collection(state: AppState, name: str) -> CollectionState:
    """Open the collection at the same path again (e.g. after a rebuild was published
    there, or ``tune-fusion`` rewrote its manifest), warm it up, then swap it in.
    Requests already running keep the old one; nothing is dropped. Call it on a
    pipeline thread (it opens the JVM's searchers)."""
    if not state.reload_lock.acquire(blocking=False):
        raise ReloadInProgress("a reload is already running; retry when it is done")
    try:
        old = state.collection(name)
        fresh = open_collection(Collection(old.collection.path), state.settings, state.reranker)
        if state.settings.warmup:
            warm_up(fresh)
        state.collections[old.name] = fresh  # one dict store: atomic for readers
    finally:
        state.reload_lock.release()
    log.info(
        "reloaded collection %s (built %s)", name, fresh.collection.manifest.build.get("created")
    )
    return fresh


def close_state(state: AppState) -> None:
    state.ready = False
    state.queue.shutdown()
