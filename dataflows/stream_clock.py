"""When to act on pending rule actions: an event-time clock per dataflow process.

The engine decides a pending action as of its due time, so *what* it decides
does not depend on when the dataflow asks. *When* matters for one thing: the
customer's own events older than the due time must have been applied first.
After a restart, or while catching up on a backlog, those events may still
sit unread in Kafka; firing by the wall clock then would send an
abandoned-cart reminder to a customer whose order is in the backlog.

So pending actions fire when the *stream* has passed their due time. Every
item routed to a customer carries a stamp from the partition it was read from:
the latest event time read there minus the allowed lateness. The clock is the
minimum over partitions: a partition its source reports as read to the end
(dataflows/caught_up.py, from any process of a cluster) follows the wall
clock, any other holds at its stamp. Live, this is the wall clock less the
lateness; catching up, it is the backlog's own time. Without reports (Redis
unreachable) a partition silent for ``idle_s`` counts as read to the end.

Stamps and reports speak only for *finished epochs*. Items do not reach a
customer in the order they were read: an event with a customer id goes there
directly, an anonymous one through its anonymous id's step, on another worker
perhaps, and within an epoch Bytewax applies whatever arrives first. A stamp
taken from the latest event read could then overtake an older event of the
same partition and fire a customer's reminder before the event that cancels
it. Bytewax does guarantee that a source reads nothing of an epoch before the
whole dataflow has finished the previous ones (its backpressure), and it
snapshots each source partition exactly at the end of its epoch. So the
source seals its position at each snapshot (``PartitionTime.seal``) and an
item carries the latest event time read *before the last seal it follows*:
everything that stamp speaks for has been applied everywhere by the time the
item is even read. The price is one epoch (``snapshot_interval_s``) of delay
while catching up; live, the reports make the clock follow the wall clock.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import deque
from datetime import UTC, datetime


class PartitionTime:
    """Source side: per partition, the latest event time read before its last seal.

    ``seal`` is called by the source partition at the end of each epoch with
    the offset it will read next; ``observe`` is called, on the same worker and
    in offset order, for every event read, and stamps it with what was read
    before the last seal it follows (module docstring).
    """

    def __init__(self, lateness_s: float) -> None:
        self.lateness_s = lateness_s
        self._latest: dict[str, float] = {}
        self._sealed: dict[str, float] = {}
        self._seals: dict[str, deque[int]] = {}

    def seal(self, source: str, next_offset: int) -> None:
        """The end of an epoch: events before ``next_offset`` are in finished epochs."""
        if next_offset >= 0:  # a symbolic position: nothing read yet
            self._seals.setdefault(source, deque()).append(next_offset)

    def observe(self, source: str, event_ts: float, offset: int | None = None) -> float:
        """Record an event read from ``source`` at ``offset``; returns its stamp:
        the watermark of the finished epochs before it."""
        seals = self._seals.get(source)
        if seals and offset is not None:
            while seals and offset >= seals[0]:
                seals.popleft()
                self._sealed[source] = self._latest.get(source, -math.inf)
        self._latest[source] = max(self._latest.get(source, -math.inf), event_ts)
        return self._sealed.get(source, -math.inf) - self.lateness_s

    def latest(self) -> float:
        """The latest event time read from any partition of this process."""
        return max(self._latest.values(), default=-math.inf)


class Wakeups:
    """Near-term times the flow's stateful steps asked to be woken at.

    A worker blocked in its source (dataflows/kafka_source.py) cannot run a pending rule action that
    falls due meanwhile, so the source never waits past the earliest of these.
    Only wake-ups within ``horizon_s`` are kept (a win-back due in two months
    is not worth remembering for a wait of a tenth of a second); stale ones
    fall out as time passes. Shared by the workers of a process.
    """

    def __init__(self, horizon_s: float = 60.0) -> None:
        self.horizon_s = horizon_s
        self._heap: list[float] = []
        self._lock = threading.Lock()

    def add(self, at: float, now: float) -> None:
        if at - now > self.horizon_s:
            return
        with self._lock:
            heapq.heappush(self._heap, at)

    def next_after(self, now: float) -> float | None:
        with self._lock:
            while self._heap and self._heap[0] <= now:
                heapq.heappop(self._heap)
            return self._heap[0] if self._heap else None


class StreamClock:
    """Customer side: event time the stream has certainly passed, for firing timers."""

    def __init__(
        self,
        lateness_s: float,
        started_at: float,
        idle_s: float = 2.0,
        live_window_s: float = 60.0,
        recheck_s: float = 1.0,
        max_recheck_s: float = 5.0,
        longest_wait_s: float = 60.0,
        reuse_s: float = 0.005,
        first_stamp_s: float = 0.0,
    ) -> None:
        self.lateness_s = lateness_s
        # Sources stamp only finished epochs: the stream's time is first known
        # an epoch after the start, unless a report says a partition is read
        # to the end sooner. Looking every ``recheck_s`` before then finds
        # nothing in any key, and catching up a backlog every key it touched
        # woke each second of the first epoch.
        self.first_stamp_s = first_stamp_s
        self.idle_s = idle_s
        self.live_window_s = live_window_s
        self.recheck_s = recheck_s
        self.max_recheck_s = max_recheck_s
        self.longest_wait_s = longest_wait_s
        self._started_at = started_at
        # How fast the stream clock moves (event seconds per wall second),
        # measured between samples at least a second apart.
        self._sample = (started_at, -math.inf)
        self._speed = 1.0
        self._heard: dict[str, tuple[float, float]] = {}  # source -> (watermark, wall)
        # Sources' own reports: source -> (wall time of the report, read to the end).
        self._reports: dict[str, tuple[float, bool]] = {}
        self._reports_at = -math.inf  # when they were last read
        self._finish_at = math.inf  # when the backlog should be read, at the pace seen
        self._last = -math.inf
        # ``now`` is asked for every key of every batch: within ``reuse_s`` of
        # the last answer, and with nothing new heard, the answer stands.
        self.reuse_s = reuse_s
        self._answered_at = -math.inf
        self._lock = threading.Lock()  # workers of one process share the clock
        self.wakeups = Wakeups()  # when the steps asked to look again (wake_at)

    def observe(self, source: str, watermark: float, wall: float) -> None:
        if not source:
            return
        with self._lock:
            previous = self._heard.get(source)
            if previous is None or watermark > previous[0]:
                self._heard[source] = (watermark, wall)
                self._answered_at = -math.inf  # news: work ``now`` out again
            else:
                self._heard[source] = (previous[0], wall)

    def reports(
        self, reports: dict[str, tuple[float, bool]], wall: float, finish_s: float = math.inf
    ) -> None:
        """Every source partition's latest report (dataflows/caught_up.py), and in
        how many seconds, at the pace seen, every partition will be read to its end."""
        with self._lock:
            self._answered_at = -math.inf
            self._reports = reports
            self._reports_at = wall
            self._finish_at = wall + finish_s

    def _read_to_end(self, source: str, wall: float) -> bool:
        """Reported read to the end by a live source of this run."""
        report = self._reports.get(source)
        return (
            report is not None
            and report[1]
            and report[0] > self._started_at  # not a report of a run that crashed
            and wall - report[0] < self.idle_s  # and the source still polls
        )

    def now(self, wall: float) -> float:
        """The event time up to which pending actions may fire."""
        follow_wall = wall - self.lateness_s
        with self._lock:
            if 0.0 <= wall - self._answered_at < self.reuse_s:
                return self._last
            self._answered_at = wall
            if wall - self._reports_at < 5 * self.idle_s:
                sources = self._heard.keys() | self._reports.keys()
                value = min(
                    (self._stamp(source, wall, follow_wall) for source in sources),
                    default=-math.inf,
                )
            elif self._heard:  # no reports to go by: silence means read to the end
                value = min(
                    follow_wall if wall - heard_at > self.idle_s else min(mark, follow_wall)
                    for mark, heard_at in self._heard.values()
                )
            elif wall - self._started_at > self.idle_s:
                value = follow_wall  # nothing to read: the stream is idle
            else:
                value = -math.inf  # just started: wait for the backlog to show itself
            self._last = max(self._last, value)
            sampled_wall, sampled = self._sample
            if wall - sampled_wall >= 1.0:
                if sampled > -math.inf and self._last > -math.inf:
                    self._speed = max(1.0, (self._last - sampled) / (wall - sampled_wall))
                self._sample = (wall, self._last)
            return self._last

    def _stamp(self, source: str, wall: float, follow_wall: float) -> float:
        if self._read_to_end(source, wall):
            return follow_wall
        heard = self._heard.get(source)
        # Not read to the end: as far as it got, or not at all if nothing came yet.
        return -math.inf if heard is None else min(heard[0], follow_wall)

    def wake_at(self, due: float, wall: float) -> datetime:
        """When (wall clock) to look at an action due at ``due`` (event time) again.

        Live, the stream clock moves with the wall clock, so the wait is exact.
        Catching up it moves faster: the wait is estimated from the speed it
        moves at, so an action due in two months (every active customer's
        win-back) is not looked at every second: no later than just after the
        backlog should be read (its lag over the pace it is read at), when the
        clock jumps to the wall clock, and every ``max_recheck_s`` while there
        is no such estimate yet. Looking late costs nothing but time:
        the engine decides as of the due time, and a customer's own later
        event fires it anyway.
        """
        clock = self.now(wall)
        if clock >= due:
            at = wall
        elif clock == -math.inf:  # just started: the stream's time is not known yet
            at = max(wall, self._started_at + self.first_stamp_s) + self.recheck_s
        elif wall - clock < self.live_window_s:
            at = wall + (due - clock)
        else:
            estimate = (due - clock) / self._speed
            if math.isfinite(self._finish_at):
                # Just after the backlog should be read: the clock jumps then.
                limit = min(self._finish_at - wall + self.recheck_s, self.longest_wait_s)
            else:
                limit = self.max_recheck_s  # no estimate of the end yet: look often
            at = wall + max(min(estimate, limit), self.recheck_s)
        self.wakeups.add(at, wall)
        return datetime.fromtimestamp(at, tz=UTC)
