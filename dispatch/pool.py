"""Many deliveries at once, each customer's in order, retries at their time.

A delivery is a small state machine that the dispatcher steps: one step
(claim, one attempt, record the outcome) runs on one of ``workers`` threads
and answers None when the delivery is finished, or how many seconds to wait
before its next step (a retry's backoff, another dispatcher's lease). Waiting
holds no thread: the delivery sits on a timer until it is due, and the thread
sends someone else's message meanwhile.

Deliveries of one lane (a customer) go one at a time: the next starts only
when the one before has finished, retries included, so a customer gets
messages in the order they were read, while other customers' messages go past
a slow or failing endpoint.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

log = logging.getLogger(__name__)

J = TypeVar("J")

# queued: behind its lane's head; ready: for the next free thread; running: on
# a thread; waiting: for its timer; dropped: let go; broken: its step raised.
State = Literal["queued", "ready", "running", "waiting", "dropped", "broken"]


@dataclass(eq=False)
class _Entry(Generic[J]):
    job: J
    lane: Hashable
    state: State = "queued"
    dropped: bool = False  # let go while running: it leaves the pool after this step


class DeliveryPool(Generic[J]):
    """``step(job)`` on ``workers`` threads, one job of a lane at a time.

    ``finished(job)`` is called (under the pool's lock: keep it short) when a
    step answers None. A step that raises breaks its lane (the lane's later
    jobs never start: they would overtake it) and sets ``error``.
    """

    def __init__(
        self,
        workers: int,
        step: Callable[[J], float | None],
        finished: Callable[[J], None],
        name: str = "delivery",
    ) -> None:
        self._step = step
        self._finished = finished
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a job left a worker or the pool
        self._timer_due = threading.Condition(self._lock)  # a timer was set or the pool closed
        self._lanes: dict[Hashable, deque[_Entry[J]]] = {}
        self._timers: list[tuple[float, int, _Entry[J]]] = []
        self._order = itertools.count()
        self._in_workers: set[_Entry[J]] = set()
        self._pending = 0
        self._closed = False
        self.error: BaseException | None = None
        self._timer = threading.Thread(target=self._fire_timers, name=f"{name}-timer", daemon=True)
        self._timer.start()

    @property
    def pending(self) -> int:
        """Jobs submitted and neither finished nor dropped."""
        return self._pending

    @property
    def running(self) -> int:
        """Jobs whose step is under way on a thread now."""
        return len(self._in_workers)

    def submit(self, job: J, lane: Hashable) -> None:
        entry = _Entry(job, lane)
        with self._lock:
            if self._closed:
                raise RuntimeError("the delivery pool is closed")
            queue = self._lanes.setdefault(lane, deque())
            queue.append(entry)
            self._pending += 1
            if len(queue) == 1:
                self._start(entry)

    def drop(self, which: Callable[[J], bool]) -> list[J]:
        """Let go of the jobs ``which`` selects: those not on a thread leave
        the pool now (returned); those on one leave after their current step,
        whatever it answers (``finished`` is still called if it finishes)."""
        dropped: list[J] = []
        with self._lock:
            for lane, queue in list(self._lanes.items()):
                kept: deque[_Entry[J]] = deque()
                for entry in queue:
                    if not which(entry.job):
                        kept.append(entry)
                    elif entry.state == "running":
                        entry.dropped = True
                        kept.append(entry)
                    else:
                        entry.state = "dropped"  # its timer or turn for a thread is skipped
                        self._pending -= 1
                        dropped.append(entry.job)
                if not kept:
                    del self._lanes[lane]
                    continue
                self._lanes[lane] = kept
                if kept[0].state == "queued":
                    self._start(kept[0])
            self._changed.notify_all()
        return dropped

    def wait_idle(self, which: Callable[[J], bool], timeout_s: float) -> bool:
        """Wait until no job ``which`` selects is on a worker; False on time-out."""
        with self._lock:
            return self._changed.wait_for(
                lambda: not any(which(e.job) for e in self._in_workers), timeout_s
            )

    def wait_room(self, limit: int, timeout_s: float) -> bool:
        """Wait until fewer than ``limit`` jobs are pending; False on time-out."""
        with self._lock:
            return self._changed.wait_for(lambda: self._pending < limit, timeout_s)

    def close(self) -> None:
        """No new steps; a step under way ends on its own (channel timeouts bound it)."""
        with self._lock:
            self._closed = True
            self._timer_due.notify_all()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._timer.join(5)

    # Under the lock --------------------------------------------------------

    def _start(self, entry: _Entry[J]) -> None:
        if self._closed:
            return
        entry.state = "ready"
        self._executor.submit(self._run, entry)

    def _leave(self, entry: _Entry[J]) -> None:
        """``entry`` (the head of its lane) is done with: the next one starts."""
        queue = self._lanes[entry.lane]
        queue.remove(entry)
        self._pending -= 1
        if not queue:
            del self._lanes[entry.lane]
        elif queue[0].state == "queued":
            self._start(queue[0])

    # Threads ---------------------------------------------------------------

    def _run(self, entry: _Entry[J]) -> None:
        with self._lock:
            if entry.state != "ready":
                return  # dropped while it waited for a thread
            entry.state = "running"
            self._in_workers.add(entry)
        try:
            again = self._step(entry.job)
        except BaseException as exc:
            log.exception("a delivery step failed unexpectedly")
            with self._lock:
                self._in_workers.discard(entry)
                entry.state = "broken"
                if self.error is None:
                    self.error = exc
                self._changed.notify_all()
            return
        with self._lock:
            self._in_workers.discard(entry)
            if again is None:
                self._finished(entry.job)
                self._leave(entry)
            elif entry.dropped:
                entry.state = "dropped"
                self._leave(entry)
            else:
                entry.state = "waiting"
                due = time.monotonic() + max(0.0, again)
                heapq.heappush(self._timers, (due, next(self._order), entry))
                self._timer_due.notify()
            self._changed.notify_all()

    def _fire_timers(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _due, _n, entry = heapq.heappop(self._timers)
                    if entry.state == "waiting":
                        self._start(entry)
                wait = self._timers[0][0] - now if self._timers else None
                self._timer_due.wait(wait)
