"""The stream clock: pending actions fire once the stream, not the wall clock, is past them."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from dataflows.caught_up import BacklogEstimate
from dataflows.stream_clock import PartitionTime, StreamClock

START = 1_800_000_000.0  # wall time the process started
OLD = 1_700_000_000.0  # event time of a backlog


def clock() -> StreamClock:
    return StreamClock(lateness_s=2.0, started_at=START)


def test_a_stamp_speaks_only_for_epochs_that_ended_before_the_event_was_read() -> None:
    """An event read after a seal carries the latest event time read before it,
    less the lateness; events of the epoch still being read add nothing yet."""
    times = PartitionTime(lateness_s=2.0)
    assert times.observe("t:0", OLD + 10, 0) == -math.inf  # no epoch has ended
    assert times.observe("t:0", OLD + 20, 1) == -math.inf
    times.seal("t:0", 2)  # end of the first epoch: offsets 0 and 1 are in it
    assert times.observe("t:0", OLD + 30, 2) == OLD + 18
    assert times.observe("t:0", OLD + 40, 3) == OLD + 18  # same epoch: not yet its own time
    times.seal("t:0", 4)
    times.seal("t:0", 6)  # two epochs end before the next event is stamped
    assert times.observe("t:0", OLD + 5, 7) == OLD + 38  # an older event does not move it back
    assert times.latest() == OLD + 40


def test_partitions_are_sealed_separately() -> None:
    times = PartitionTime(lateness_s=0.0)
    times.observe("t:0", OLD + 10, 0)
    times.observe("t:1", OLD + 99, 0)
    times.seal("t:0", 1)
    times.seal("t:1", -1001)  # nothing read yet: a symbolic position seals nothing
    assert times.observe("t:0", OLD + 11, 1) == OLD + 10
    assert times.observe("t:1", OLD + 100, 1) == -math.inf


def test_before_anything_is_known_nothing_fires() -> None:
    assert clock().now(START + 0.5) == -math.inf


def test_a_backlog_holds_the_clock_at_the_slowest_partition() -> None:
    c = clock()
    c.observe("t:0", OLD + 100, START + 1)
    c.observe("t:1", OLD + 40, START + 1)
    c.reports({"t:0": (START + 1, False), "t:1": (START + 1, False)}, START + 1)
    assert c.now(START + 1) == OLD + 40


def test_a_partition_read_to_its_end_follows_the_wall_clock() -> None:
    c = clock()
    c.observe("t:0", OLD + 100, START + 1)
    c.reports({"t:0": (START + 1.5, True)}, START + 1.5)
    assert c.now(START + 2) == START + 2 - 2.0


def test_a_silent_partition_with_unread_records_keeps_holding() -> None:
    """The other process of a cluster stalls: silence is not the end of its partition."""
    c = clock()
    c.observe("t:0", OLD + 100, START + 1)
    c.observe("t:1", OLD + 50, START + 1)
    c.reports({"t:0": (START + 10, True), "t:1": (START + 10, False)}, START + 10)
    assert c.now(START + 10) == OLD + 50


def test_reports_of_a_run_that_crashed_do_not_count() -> None:
    c = clock()
    c.reports({"t:0": (START - 1, True)}, START + 1)  # written before this process started
    assert c.now(START + 1) == -math.inf


def test_a_source_that_stopped_reporting_is_not_trusted_to_be_at_its_end() -> None:
    c = clock()
    c.observe("t:0", OLD + 100, START + 1)
    c.reports({"t:0": (START + 1, True)}, START + 1)
    c.reports({"t:0": (START + 1, True)}, START + 9)  # the same old report, 8 s later
    assert c.now(START + 9) == OLD + 100  # back to the partition's own stamp


def test_without_reports_silence_means_read_to_the_end() -> None:
    c = clock()
    c.observe("t:0", OLD + 100, START + 1)
    assert c.now(START + 1.5) == OLD + 100
    assert c.now(START + 5) == START + 5 - 2.0


def test_the_clock_never_goes_back() -> None:
    c = clock()
    c.reports({"t:0": (START + 1, True)}, START + 1)
    ahead = c.now(START + 1.5)
    c.observe("t:0", OLD, START + 2)  # a late backlog shows up
    c.reports({"t:0": (START + 2, False)}, START + 2)
    assert c.now(START + 2) == ahead


def test_live_the_wait_is_exact_and_catching_up_it_is_rechecked() -> None:
    live = clock()
    live.reports({"t:0": (START + 1, True)}, START + 1)
    wall = START + 1.5
    due = wall - 2.0 + 600  # ten minutes ahead of the stream
    assert live.wake_at(due, wall) == datetime.fromtimestamp(wall + 600, tz=UTC)

    behind = clock()
    behind.observe("t:0", OLD, START + 1)
    behind.reports({"t:0": (START + 1, False)}, START + 1)
    wake = behind.wake_at(OLD + 60 * 86400, START + 1).timestamp()
    assert START + 1 + 1 <= wake <= START + 1 + 5  # between recheck_s and max_recheck_s


def test_just_started_due_actions_are_looked_at_again_soon() -> None:
    assert clock().wake_at(OLD, START + 0.5) == datetime.fromtimestamp(START + 1.5, tz=UTC)


def test_catching_up_a_far_action_is_looked_at_just_after_the_backlog_should_be_read() -> None:
    """The clock jumps to the wall clock when the backlog is read: an action due
    long ago by the wall clock must not wait the full minute then."""
    c = clock()
    c.observe("t:0", OLD, START + 1)
    c.reports({"t:0": (START + 1, False)}, START + 1, finish_s=3.0)
    wake = c.wake_at(OLD + 60 * 86400, START + 1).timestamp()
    assert wake == START + 1 + 3.0 + 1.0  # the estimated end of the backlog, plus a recheck


def test_wakeups_keep_the_near_ones_and_forget_the_past() -> None:
    from dataflows.stream_clock import Wakeups

    wakeups = Wakeups(horizon_s=60.0)
    wakeups.add(105.0, now=100.0)
    wakeups.add(102.0, now=100.0)
    wakeups.add(100.0 + 3600, now=100.0)  # beyond the horizon: not kept
    assert wakeups.next_after(100.0) == 102.0
    assert wakeups.next_after(103.0) == 105.0
    assert wakeups.next_after(106.0) is None


def test_the_clock_notes_the_wakeups_it_hands_out() -> None:
    clock = StreamClock(lateness_s=0.0, started_at=0.0, idle_s=1.0)
    clock.observe("t:0", 1000.0, wall=1000.0)
    at = clock.wake_at(1000.5, wall=1000.0)
    assert clock.wakeups.next_after(1000.0) == at.timestamp()


def test_backlog_estimate_holds_between_reports_and_takes_the_pace_over_seconds() -> None:
    backlog = BacklogEstimate(window_s=5.0)
    backlog.report("t:0", 100.0, 10_000)
    assert backlog.finish_s(100.1) == math.inf  # one report: no pace yet
    backlog.report("t:0", 101.0, 9_000)  # 1,000 records/s: 9 s left
    assert backlog.finish_s(101.0) == pytest.approx(9.0)
    backlog.report("t:0", 101.0, 9_000)  # the same report read again: the estimate stands
    assert backlog.finish_s(102.0) == pytest.approx(8.0)
    backlog.report("t:1", 102.0, 0)  # read to the end: no say
    assert backlog.finish_s(102.0) == pytest.approx(8.0)
    for second in range(2, 10):  # steady 1,000/s, then the pace is taken over 5 s
        backlog.report("t:0", 100.0 + second, 10_000 - 1_000 * second)
    backlog.report("t:0", 112.5, 100)  # a burst in the last half second does not swing it
    assert 112.5 + 0.1 < 112.5 + backlog.finish_s(112.5) < 112.5 + 1.0
    assert backlog.finish_s(200.0) == math.inf  # passed and still lagging: no estimate
    backlog.report("t:0", 201.0, 0)
    assert backlog.finish_s(201.0) == 0.0


def test_backlog_estimate_without_progress_has_no_answer() -> None:
    backlog = BacklogEstimate()
    backlog.report("t:0", 100.0, 500)
    backlog.report("t:0", 101.0, 700)  # more written than read
    assert backlog.finish_s(101.0) == math.inf


def test_just_started_keys_wait_for_the_first_epoch_before_looking_again() -> None:
    c = StreamClock(2.0, started_at=START, first_stamp_s=5.0)
    assert c.wake_at(OLD, START + 0.5) == datetime.fromtimestamp(START + 6.0, tz=UTC)
    assert c.wake_at(OLD, START + 7.0) == datetime.fromtimestamp(START + 7.0, tz=UTC)  # idle: due


def test_backlog_estimate_reads_the_lag_a_source_sealed_at_its_epoch_end() -> None:
    backlog = BacklogEstimate()
    backlog.report("t:0", 100.0, 50_000)
    backlog.report("t:0", 105.0, 40_000)  # 2,000/s
    backlog.report("t:0", 106.0, 40_000)  # re-reported with a later poll: same epoch
    assert backlog.finish_s(106.0) == pytest.approx(19.0)
