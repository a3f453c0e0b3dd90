"""One Executor.run(): its tasks, their results so far, which are in flight, and when it is done."""

from __future__ import annotations

import threading
from collections import deque

from ..records import Task, TaskResult


class WorkQueue:
    """One run()'s work: the tasks, their results so far, and which are in flight."""

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = tasks
        self.results: list[TaskResult | None] = [None] * len(tasks)
        self.keys: list[str | None] = [None] * len(tasks)
        self.in_flight: set[int] = set()
        self.done = threading.Event()
        self.closed = False
        self._todo: deque[int] = deque()
        self._open = self._workers = 0
        self._lock = threading.Lock()

    def schedule(self, indices: list[int], *, workers: int) -> None:
        self._todo.extend(indices)
        self._open = len(indices)
        self._workers = workers
        if not indices or not workers:
            self.done.set()

    def leave(self) -> None:
        """A worker exits; when the last one has, nothing more can finish."""
        with self._lock:
            self._workers -= 1
            if self._workers <= 0:
                self.done.set()

    def take(self) -> int | None:
        with self._lock:
            if not self._todo or self.closed:
                return None
            index = self._todo.popleft()
            self.in_flight.add(index)
            return index

    def finish(self, index: int, result: TaskResult) -> bool:
        """Record a result; False once the batch was closed (the caller stopped waiting)."""
        with self._lock:
            if self.closed:
                return False
            self.results[index] = result
            self.in_flight.discard(index)
            self._open -= 1
            if self._open == 0:
                self.done.set()
            return True

    def close(self) -> None:
        with self._lock:
            self.closed = True
