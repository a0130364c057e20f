"""Concurrent delivery without Kafka: the commit point of a partition, the pool
that keeps each customer's deliveries in order, the breaker's half-open trial
under many threads, and the setting."""

from __future__ import annotations

import itertools
import queue
import random
import threading
import time
from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.breaker import CircuitBreaker
from dispatch.offsets import PartitionProgress
from dispatch.pool import DeliveryPool
from pulse.settings import SettingsError, load_settings


def expected_commit_point(read: list[int], finished: set[int]) -> int | None:
    """The offset after the longest run of finished offsets from the oldest read."""
    point = None
    for offset in read:
        if offset not in finished:
            break
        point = offset + 1
    return point


@given(
    first=st.integers(min_value=0, max_value=10**12),
    gaps=st.lists(st.integers(min_value=1, max_value=4), max_size=60),
    data=st.data(),
)
def test_the_commit_point_never_passes_an_unfinished_offset_and_reaches_the_end(
    first: int, gaps: list[int], data: st.DataObject
) -> None:
    """Reads in order interleaved with finishes in any order (offsets with gaps,
    as compaction and transaction markers leave them)."""
    offsets = list(itertools.accumulate(gaps, initial=first))
    progress = PartitionProgress()
    unread, read, unfinished = list(offsets), list[int](), list[int]()
    finished: set[int] = set()
    while unread or unfinished:
        if unread and (not unfinished or data.draw(st.booleans(), label="read next")):
            offset = unread.pop(0)
            progress.read(offset)
            read.append(offset)
            unfinished.append(offset)
        else:
            offset = data.draw(st.sampled_from(unfinished), label="finish")
            unfinished.remove(offset)
            progress.finish(offset)
            finished.add(offset)
        point = progress.commit_due()
        assert point == expected_commit_point(read, finished)
        if point is not None:
            assert all(o >= point for o in unfinished)  # never past an unfinished one
        assert progress.unfinished == len(unfinished)
    assert progress.commit_due() == offsets[-1] + 1


def test_a_commit_point_is_due_once_until_it_moves() -> None:
    progress = PartitionProgress()
    for offset in (5, 6, 9):
        progress.read(offset)
    assert progress.commit_due() is None
    progress.finish(6)
    assert progress.commit_due() is None  # 5 is not finished
    progress.finish(5)
    assert progress.commit_due() == 7
    progress.committed = 7
    assert progress.commit_due() is None
    progress.finish(9)
    assert progress.commit_due() == 10
    with pytest.raises(ValueError, match="offset 9 read again"):
        progress.read(9)


def run_until(finished: queue.SimpleQueue[object], count: int, timeout_s: float) -> list[object]:
    out: list[object] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count:
        out.append(finished.get(timeout=max(0.01, deadline - time.monotonic())))
    return out


def test_each_lane_runs_in_order_retries_included_and_at_most_workers_at_once() -> None:
    rng = random.Random(11)
    jobs = [(lane, n) for n in range(12) for lane in "abcdefg"]
    pauses = {job: rng.uniform(0, 0.004) for job in jobs}
    retry_once = {job for job in jobs if rng.random() < 0.3}
    lock = threading.Lock()
    active, peak = [0], [0]
    done: dict[str, list[int]] = defaultdict(list)

    def step(job: tuple[str, int]) -> float | None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(pauses[job])
        with lock:
            active[0] -= 1
            if job in retry_once:
                retry_once.discard(job)
                return 0.005
            done[job[0]].append(job[1])
        return None

    finished: queue.SimpleQueue[object] = queue.SimpleQueue()
    pool: DeliveryPool[tuple[str, int]] = DeliveryPool(4, step, finished.put)
    try:
        for job in jobs:
            pool.submit(job, job[0])
        run_until(finished, len(jobs), 20)
    finally:
        pool.close()
    assert dict(done) == {lane: list(range(12)) for lane in "abcdefg"}
    assert 1 < peak[0] <= 4
    assert pool.pending == 0


def test_a_retry_waits_on_a_timer_not_on_a_thread() -> None:
    """With one thread, a delivery waiting 0.5 s for its retry lets another
    customer's go first."""
    attempts: dict[str, list[float]] = defaultdict(list)

    def step(job: str) -> float | None:
        attempts[job].append(time.monotonic())
        return 0.5 if job == "slow" and len(attempts[job]) == 1 else None

    finished: queue.SimpleQueue[object] = queue.SimpleQueue()
    pool: DeliveryPool[str] = DeliveryPool(1, step, finished.put)
    try:
        started = time.monotonic()
        pool.submit("slow", "customer-1")
        pool.submit("fast", "customer-2")
        assert run_until(finished, 2, 5) == ["fast", "slow"]
    finally:
        pool.close()
    assert attempts["fast"][0] - started < 0.25
    assert attempts["slow"][1] - attempts["slow"][0] >= 0.45


def test_dropping_lets_go_of_jobs_off_thread_now_and_of_a_running_one_after_its_step() -> None:
    gate = threading.Event()
    steps: list[str] = []

    def step(job: str) -> float | None:
        steps.append(job)
        if job == "running":
            gate.wait(5)
            return 0.01  # would retry: dropped instead
        return 10.0  # "on-timer" waits

    finished: queue.SimpleQueue[object] = queue.SimpleQueue()
    pool: DeliveryPool[str] = DeliveryPool(1, step, finished.put)
    try:
        pool.submit("on-timer", "y")
        wait_for_steps = time.monotonic() + 5
        while steps != ["on-timer"] and time.monotonic() < wait_for_steps:
            time.sleep(0.01)
        pool.submit("running", "x")  # takes the only thread
        pool.submit("queued", "x")  # behind "running" in its lane
        pool.submit("ready", "w")  # waits for the thread
        while len(steps) < 2 and time.monotonic() < wait_for_steps:
            time.sleep(0.01)
        dropped = pool.drop(lambda job: True)
        assert sorted(dropped) == ["on-timer", "queued", "ready"]
        assert pool.pending == 1 and pool.running == 1  # "running" leaves after its step
        assert not pool.wait_idle(lambda job: job == "running", 0.1)
        gate.set()
        assert pool.wait_idle(lambda job: job == "running", 5)
        time.sleep(0.1)
    finally:
        pool.close()
    assert pool.pending == 0 and finished.empty()
    assert steps == ["on-timer", "running"]  # the dropped ones never ran again


def test_a_failing_step_stops_its_lane_and_is_reported() -> None:
    def step(job: str) -> float | None:
        if job == "a1":
            raise RuntimeError("boom")
        return None

    finished: queue.SimpleQueue[object] = queue.SimpleQueue()
    pool: DeliveryPool[str] = DeliveryPool(2, step, finished.put)
    try:
        for job in ("a1", "a2", "b1"):
            pool.submit(job, job[0])
        assert run_until(finished, 1, 5) == ["b1"]
        time.sleep(0.1)
    finally:
        pool.close()
    assert isinstance(pool.error, RuntimeError) and finished.empty()  # a2 never overtakes a1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def in_thread(action: object) -> None:
    assert callable(action)
    thread = threading.Thread(target=action)
    thread.start()
    thread.join(5)


def test_a_late_answer_from_before_the_circuit_opened_leaves_the_trial_alone() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=10.0, clock=clock)
    assert breaker.wait_s() == 0  # another thread's send goes out while closed...
    in_thread(lambda: breaker.record(False))  # ...and its failure opens the circuit
    clock.now += 10.0
    assert breaker.wait_s() == 0  # this thread holds the half-open trial
    in_thread(lambda: breaker.record(False))  # a late failure of an older send
    clock.now += 10.0  # (it opened the circuit again) past the reset, the trial still out
    waits: list[float] = []
    in_thread(lambda: waits.append(breaker.wait_s()))
    assert waits[0] > 0  # no second trial
    breaker.record(True)  # the trial's own answer
    assert breaker.state == "closed"


def test_dispatch_concurrency_defaults_to_32_comes_from_the_environment_and_is_bounded() -> None:
    assert load_settings(environ={}).dispatch_concurrency == 32
    assert load_settings(environ={"PULSE_DISPATCH_CONCURRENCY": "8"}).dispatch_concurrency == 8
    for bad in ("0", "101"):
        with pytest.raises(SettingsError, match=r"^dispatch_concurrency .*from 1 to 100"):
            load_settings(environ={"PULSE_DISPATCH_CONCURRENCY": bad})
