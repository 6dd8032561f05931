"""What the service loads once, in the lifespan: collections, their opened retrievers and
named pipelines, the reranker, and the bounded queue of pipeline threads
(``twofold.app.work.WorkQueue``) that runs pipelines under each request's ``Deadline``.

Every sub-index of a collection (the interests index too) is opened at load and at
reload, never by a request. A request holds its collection through
``AppState.lease``; a reload (on a thread of its own, never a search thread) swaps
the fresh collection in and retires the old one, which is closed (Lucene readers,
memory maps, file descriptors) when its last lease ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from twofold.app.metrics import Metrics
from twofold.app.settings import Settings
from twofold.app.work import BudgetExceeded, Deadline, Overloaded, WorkQueue
from twofold.core.errors import (
    CollectionError,
    InputError,
    NotFoundError,
    TwofoldError,
    UnknownNameError,
)
from twofold.core.types import Query
from twofold.indexing.collection import Collection
from twofold.indexing.verify import check_collection
from twofold.models.threads import set_torch_threads
from twofold.search.interests import InterestRetriever
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


class NotReady(Exception):
    """The collections are still loading, or failed to load (mapped to 503)."""


@dataclass
class Startup:
    """Where loading stands: ``loading`` until the loader returns, then ``ready`` (with
    ``state``) or ``failed`` (with ``error``). The service answers ``/healthz`` and
    ``/readyz`` from it meanwhile; every other route waits for ``state``."""

    status: str = "loading"
    state: AppState | None = None
    error: str | None = None

    def require(self) -> AppState:
        if self.state is not None:
            return self.state
        if self.status == "failed":
            raise NotReady(f"the service failed to load its collections: {self.error}")
        raise NotReady("the service is still loading its collections; retry shortly")


__all__ = [
    "AppState",
    "BudgetExceeded",
    "CollectionState",
    "Deadline",
    "NotReady",
    "Overloaded",
    "ReloadInProgress",
    "Startup",
]


@dataclass
class CollectionState:
    collection: Collection
    retrievers: dict[str, Retriever]
    pipelines: dict[str, Pipeline]
    default_pipeline: str
    interests: InterestRetriever | None = None  # opened at load when it has the index
    users: int = 0  # leases held (``AppState.lease``)
    retired: bool = False  # replaced by a reload: closed when ``users`` drops to 0

    @property
    def name(self) -> str:
        return self.collection.name

    def pipeline(self, name: str) -> Pipeline:
        if name in self.pipelines:
            return self.pipelines[name]
        if name in PIPELINES and (PIPELINES.get(name).rerank or PIPELINES.get(name).milvus):
            # raises, saying what is missing: a reranker, or the sub-indexes in Milvus
            build_pipeline(self.collection, name)
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
    refused: dict[str, str] = field(default_factory=dict)  # name -> why it is not served
    reload_lock: threading.Lock = field(default_factory=threading.Lock)  # held while one runs
    lease_lock: threading.Lock = field(default_factory=threading.Lock)
    # reloads run here, never on ``queue``: a reload must not take a search thread
    reloader: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="twofold-reload")
    )

    def start_reload(self, name: str) -> Future[CollectionState]:
        """Reopen collection ``name`` on the reload thread (see ``reload_collection``);
        ``ReloadInProgress`` at once while another reload runs. The lock is taken here,
        by the caller, so that two requests cannot both pass the check and queue up."""
        self.collection(name)  # unknown name -> NotFoundError before any work
        if not self.reload_lock.acquire(blocking=False):
            raise ReloadInProgress("a reload is already running; retry when it is done")
        try:
            future = self.reloader.submit(_reopen, self, name)
        except BaseException:
            self.reload_lock.release()
            raise
        # done or cancelled before it ran: either way the next reload may start
        future.add_done_callback(lambda _: self.reload_lock.release())
        return future

    @contextmanager
    def lease(self, name: str | None) -> Iterator[CollectionState]:
        """The collection ``name`` (default: the first), kept open until the block ends
        even if a reload replaces it meanwhile."""
        with self.lease_lock:
            cs = self.collection(name)
            cs.users += 1
        try:
            yield cs
        finally:
            with self.lease_lock:
                cs.users -= 1
                done = cs.retired and cs.users == 0
            if done:
                self._close_later(cs)

    def replace(self, fresh: CollectionState) -> None:
        """Swap ``fresh`` in for the collection of its name; the old one is closed once
        no request holds it."""
        with self.lease_lock:
            old = self.collections.get(fresh.name)
            self.collections[fresh.name] = fresh  # one dict store: atomic for readers
            if old is None or old is fresh:
                return
            old.retired = True
            done = old.users == 0
        if done:
            self._close_later(old)

    def _close_later(self, cs: CollectionState) -> None:
        """Close on a pipeline thread (Lucene's JVM calls stay off the event loop)."""
        try:
            self.queue.executor.submit(close_collection, cs)
        except RuntimeError:  # the pool is shut down: close here
            close_collection(cs)

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
    """Open every sub-index (checking its doc count), every retriever once, and build
    every named pipeline the collection can run. On failure the collection is closed."""
    try:
        return _open(collection, settings, reranker)
    except BaseException:
        collection.close()
        raise


def _open(collection: Collection, settings: Settings, reranker: Reranker | None) -> CollectionState:
    collection.open_all()
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
    interests = None
    if collection.has("interests"):
        interests = InterestRetriever.from_collection(collection)
    return CollectionState(collection, retrievers, pipelines, default, interests)


def close_collection(cs: CollectionState) -> None:
    try:
        cs.collection.close()
    except Exception:  # closing must not take the service down; say what stayed open
        log.exception("closing collection %s failed", cs.name)
    else:
        log.info("closed the replaced collection %s", cs.name)


def load_state(settings: Settings, metrics: Metrics | None = None) -> AppState:
    """Everything a request needs, loaded and (with ``warmup``) exercised once."""
    if not settings.collections:
        raise InputError("no collections to serve; give at least one collection directory")
    set_torch_threads(settings.torch_threads)  # once, before any model runs
    reranker = load_reranker(settings)
    collections: dict[str, CollectionState] = {}
    refused: dict[str, TwofoldError] = {}
    for path in settings.collections:
        try:
            state = open_verified(path, settings, reranker)
        except TwofoldError as exc:  # refuse this one, serve the others
            log.error("refusing collection %s: %s", path, exc)
            refused[path.name] = exc
            continue
        collections[state.name] = state
    if not collections:
        if len(refused) == 1:
            raise next(iter(refused.values()))
        raise CollectionError(
            "no collection could be loaded: "
            + "; ".join(f"{name}: {exc}" for name, exc in refused.items())
        )
    queue = WorkQueue(settings.search_threads, settings.max_queue)
    app_state = AppState(settings, collections, reranker, metrics or Metrics(), queue)
    app_state.refused = {name: str(exc) for name, exc in refused.items()}
    if settings.warmup:
        t0 = time.perf_counter()
        for cs in collections.values():
            # on a pipeline thread: the JVM attaches there, models load their kernels
            queue.submit(warm_up, cs).result()
        log.info("warm-up done in %.2f s", time.perf_counter() - t0)
    app_state.ready = True
    return app_state


def open_verified(path: Path, settings: Settings, reranker: Reranker | None) -> CollectionState:
    """The collection at ``path``, its files first checked against its manifest
    (``settings.verify``), then opened."""
    root = path.resolve()  # one version: the one verified is the one opened
    check_collection(root, settings.verify, shown=path)
    return open_collection(Collection(path, root), settings, reranker)


WARM_UP_QUERIES = 3  # enough for the query encoders to take their traces (models.traced)


def warm_up(cs: CollectionState) -> None:
    for pipeline in cs.pipelines.values():
        times = 1 if pipeline.reranker is not None else WARM_UP_QUERIES
        for _ in range(times):
            pipeline.search(Query("warmup", "warm up"), 1)


def reload_collection(state: AppState, name: str) -> CollectionState:
    """Open the collection at the same path again (e.g. after a rebuild was published
    there, or ``tune-fusion`` rewrote its manifest), warm it up, then swap it in.
    Requests already running keep the old one; nothing is dropped. It runs on the
    reload thread (``AppState.start_reload``), one at a time, and waits for it."""
    return state.start_reload(name).result()


def _reopen(state: AppState, name: str) -> CollectionState:
    old = state.collection(name)
    fresh = open_verified(old.collection.path, state.settings, state.reranker)
    try:
        if state.settings.warmup:
            warm_up(fresh)
    except BaseException:
        fresh.collection.close()
        raise
    state.replace(fresh)
    log.info(
        "reloaded collection %s (built %s)", name, fresh.collection.manifest.build.get("created")
    )
    return fresh


def close_state(state: AppState) -> None:
    state.ready = False
    state.reloader.shutdown(wait=True, cancel_futures=True)  # a running one swaps in first
    state.queue.shutdown()
    for cs in state.collections.values():
        close_collection(cs)
