"""Two dataflow processes (Bytewax cluster on loopback) serve and trigger exactly what one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from benchmarks.recovery import (
    compare,
    compare_records,
    produce_stream,
    redis_state,
    run_until_caught_up,
    topic_records,
)
from pulse.settings import Settings
from tests.e2e.test_crash_recovery import _cleanup, _twin

pytestmark = pytest.mark.e2e

EVENTS = 20_000


def test_two_processes_over_four_partitions_equal_one_process(
    pulse_settings: Settings, tmp_path: Path
) -> None:
    from pulse.settings import load_settings

    four = load_settings(environ=pulse_settings.as_environ(), partitions=4)
    single = _twin(four, tmp_path, "one")
    cluster = _twin(four, tmp_path, "two")
    try:
        assert produce_stream(single, EVENTS) == EVENTS
        assert produce_stream(cluster, EVENTS) == EVENTS
        run_until_caught_up(single, tmp_path / "one.log", timeout_s=240)
        run_until_caught_up(cluster, tmp_path / "two.log", timeout_s=240, processes=2)
        log = (tmp_path / "two.log").read_text()
        assert "process 1" in log or log.count("dataflow starting") == 2, log[-2000:]

        client: redis.Redis = redis.Redis.from_url(pulse_settings.redis)
        expected = redis_state(single, client)
        actual = redis_state(cluster, client)
        assert len(expected) > 1000
        assert compare(expected, actual) == []
        # The rules decide alike too: the same triggers, whichever process decided.
        triggers = topic_records(single, single.triggers_topic)
        assert len(triggers) > 100
        assert (
            compare_records("triggers", triggers, topic_records(cluster, cluster.triggers_topic))
            == []
        )
        # One next-best-action policy, on whichever worker holds its shard,
        # decides and learns alike from the inputs of both processes.
        nba = topic_records(single, single.nba_topic)
        assert len(nba) > 1000
        assert compare_records("nba", nba, topic_records(cluster, cluster.nba_topic)) == []
    finally:
        _cleanup(single)
        _cleanup(cluster)
