"""Deadlines and the bounded queue of pipeline work.

A request's time budget starts when it arrives (the middleware stamps
``scope["state"]["arrived"]``, a ``time.monotonic()`` instant), not when a pipeline
thread picks it up. The work then checks its ``Deadline`` between stages and stops
(``BudgetExceeded``, a 504) instead of finishing an answer nobody waits for.

``WorkQueue`` runs work on a fixed pool of long-lived threads (Lucene's JVM sees a
bounded set of attached threads; a slow query cannot starve the event loop) and holds
at most ``threads + max_queue`` items: past that, ``Overloaded`` (429 with
``Retry-After``) sheds the request at once, never an unbounded wait.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import Counter
from starlette.requests import Request

from twofold.search.pipeline import DeadlineExceeded

T = TypeVar("T")


def arrived(request: Request) -> float:
    """When the request arrived (``time.monotonic()``, stamped by the middleware; now
    when no middleware ran, as in a bare ``TestClient`` of one router)."""
    value = request.scope.get("state", {}).get("arrived")
    return float(value) if value is not None else time.monotonic()


class BudgetExceeded(DeadlineExceeded):
    """A request ran past its time budget (mapped to 504)."""


class Overloaded(Exception):
    """Every pipeline thread is busy and the queue is full (mapped to 429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Deadline:
    """``arrived`` and ``at`` are ``time.monotonic()`` instants; ``budget_s = at - arrived``.

    ``check(stage)`` raises ``BudgetExceeded`` once ``at`` has passed, naming the stage
    that was not started (and counts the stop in ``stops`` when given)."""

    arrived: float
    at: float
    stops: Counter | None = None

    @staticmethod
    def start(arrived: float, budget_s: float, stops: Counter | None = None) -> Deadline:
        return Deadline(arrived, arrived + budget_s, stops)

    @property
    def budget_s(self) -> float:
        return self.at - self.arrived

    def remaining_s(self) -> float:
        return self.at - time.monotonic()

    def within(self, budget_s: float) -> Deadline:
        """The earlier of this deadline and ``budget_s`` after arrival (a batch item's own
        budget inside the batch's shared one)."""
        return Deadline(self.arrived, min(self.at, self.arrived + budget_s), self.stops)

    def share(self, fraction: float) -> float:
        """The instant ``fraction`` of the budget after arrival (the reranker's share)."""
        return self.arrived + fraction * self.budget_s

    def check(self, stage: str) -> None:
        if time.monotonic() >= self.at:
            if self.stops is not None:
                self.stops.labels(stage).inc()
            raise BudgetExceeded(
                f"the request ran out of its time budget of {self.budget_s * 1000:.0f} ms "
                f"before {stage}; raise budget_ms or ask for fewer hits"
            )


class WorkQueue:
    """``threads`` pipeline threads and room for ``max_queue`` waiting items."""

    def __init__(self, threads: int, max_queue: int, retry_after_s: int = 1) -> None:
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="twofold-search")
        self.capacity = threads + max_queue
        self.retry_after_s = retry_after_s
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._held = 0
        self._count_lock = threading.Lock()

    @property
    def held(self) -> int:
        """Items running or waiting now."""
        return self._held

    def _release(self, _: object) -> None:
        with self._count_lock:
            self._held -= 1
        self._slots.release()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a pipeline thread, or raise ``Overloaded`` when full."""
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                f"the service is at capacity ({self.capacity} searches running or queued); "
                f"retry after {self.retry_after_s} s",
                self.retry_after_s,
            )
        with self._count_lock:
            self._held += 1
        try:
            future = self.executor.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return future

    async def run(self, deadline: Deadline, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a pipeline thread, awaited until ``deadline``. Work still
        queued at the deadline never starts; running work stops at its next check."""

        def task() -> T:
            deadline.check("a pipeline thread was free")
            return fn(*args)

        future = self.submit(task)
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(future), timeout=max(deadline.remaining_s(), 0.0)
            )
        except TimeoutError:
            future.cancel()
            raise BudgetExceeded(
                f"the request took longer than its time budget of "
                f"{deadline.budget_s * 1000:.0f} ms; raise budget_ms or ask for fewer hits"
            ) from None

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
