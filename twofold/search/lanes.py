"""How a pipeline's retrievers share the machine's cores: longest expected first, in as
many lanes as there are cores.

Starting every retriever on a thread of its own puts four runnable threads on a 2-core
machine, and the slowest retriever (a query encoder) then waits for cores that the cheap
ones (BM25, the inference-free sparse product) hold: on SciFact, hybrid took 1.8x its
slowest retriever although two encoders side by side each keep their solo speed
(``bench/bench_hybrid_parallel.py``, "paired"). :class:`Lanes` instead splits the
retrievers into at most ``cores`` sequential lanes by the greedy longest-processing-time
rule (each retriever, dearest first, joins the lane whose expected total is least), runs
the first lane on the calling thread and the others on the shared pool. The expected
cost of a retriever is a moving average of its own measured time; a retriever with none
yet gets a lane of its own, so the first query runs everything side by side and
measures it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

SMOOTHING = 0.2  # weight of the newest time in a retriever's moving average


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def plan(costs: Mapping[str, float | None], width: int) -> list[list[str]]:
    """``costs`` (name -> expected ms, None: not known) split into at most ``width``
    lanes, each run in order: unknown costs get lanes of their own first, then the rest,
    dearest first, each joins the lane whose expected total is least (ties: the earlier
    lane). Empty lanes are dropped."""
    width = max(1, width)
    unknown = [n for n, c in costs.items() if c is None]
    known = sorted((n for n, c in costs.items() if c is not None), key=lambda n: -(costs[n] or 0))
    lanes: list[list[str]] = [[] for _ in range(width)]
    totals = [0.0] * width
    for i, name in enumerate(unknown):  # as if dearer than anything measured
        lane = i % width
        lanes[lane].append(name)
        totals[lane] = float("inf")
    for name in known:
        lane = min(range(width), key=lambda j: (totals[j], j))
        lanes[lane].append(name)
        totals[lane] += costs[name] or 0.0
    return [lane for lane in lanes if lane]


class Lanes:
    """Runs named tasks in lanes (:func:`plan`) and learns their costs; thread-safe."""

    def __init__(self, width: int | None = None) -> None:
        self.width = width or cores()
        self._costs: dict[str, float] = {}
        self._lock = threading.Lock()

    def costs(self, names: Sequence[str]) -> dict[str, float | None]:
        with self._lock:
            return {n: self._costs.get(n) for n in names}

    def observe(self, name: str, ms: float) -> None:
        with self._lock:
            old = self._costs.get(name)
            self._costs[name] = ms if old is None else (1 - SMOOTHING) * old + SMOOTHING * ms

    def run(
        self,
        tasks: Mapping[str, Callable[[], T]],
        pool: Executor,
        cost_of: Callable[[T], float] | None = None,
    ) -> dict[str, Future[T]]:
        """Every task of ``tasks``, a finished future per name (in ``tasks``' order).
        ``cost_of(result)``: the ms to learn from a result (None: none learned)."""
        lanes = plan(self.costs(list(tasks)), self.width)
        futures: dict[str, Future[T]] = {name: Future() for name in tasks}
        if not lanes:  # no tasks
            return futures

        def lane(names: list[str]) -> None:
            for name in names:
                try:
                    result = tasks[name]()
                except Exception as exc:
                    futures[name].set_exception(exc)
                    continue
                if cost_of is not None:
                    self.observe(name, cost_of(result))
                futures[name].set_result(result)

        started: list[Future[Any]] = [pool.submit(lane, names) for names in lanes[1:]]
        lane(lanes[0])
        for f in started:
            f.result()  # a lane itself never raises: each task's error is in its future
        return futures
