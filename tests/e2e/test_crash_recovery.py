"""SIGKILL the dataflow repeatedly mid-stream; the served state, the triggers and the
decisions must equal a run without crashes, with rule waits pending at every kill.

CI size; `python -m benchmarks.recovery` runs the same harness at 100,000 events.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import redis

from benchmarks.recovery import (
    compare,
    compare_records,
    crash_repeatedly,
    crash_rules,
    produce_stream,
    redis_state,
    run_until_caught_up,
    topic_records,
)
from pulse.services.kafka import ensure_topics
from pulse.settings import Settings, load_settings

pytestmark = pytest.mark.e2e

EVENTS = 30_000


def _twin(settings: Settings, tmp_path: Path, name: str) -> Settings:
    twin = load_settings(
        environ=settings.as_environ(),
        topic_prefix=f"{settings.topic_prefix}{name}",
        redis_prefix=f"{settings.redis_prefix}{name}",
        consumer_group_prefix=f"{settings.consumer_group_prefix}{name}",
        recovery_dir=str(tmp_path / name),
        snapshot_interval_s=0.5,
        rules_dir=crash_rules(tmp_path / f"rules-{name}"),
    )
    ensure_topics(twin)
    return twin


def _cleanup(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": settings.kafka}).delete_topics(list(settings.all_topics))
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def test_sigkill_at_random_points_loses_nothing_and_counts_nothing_twice(
    pulse_settings: Settings, tmp_path: Path
) -> None:
    reference = _twin(pulse_settings, tmp_path, "ref")
    crashed = _twin(pulse_settings, tmp_path, "crash")
    try:
        assert produce_stream(reference, EVENTS) == EVENTS
        assert produce_stream(crashed, EVENTS) == EVENTS

        run_until_caught_up(reference, tmp_path / "ref.log", timeout_s=240)
        kills = crash_repeatedly(
            crashed, tmp_path / "crash.log", crashes=5, rng=random.Random(3), total=EVENTS
        )
        assert len(kills) == 5
        # The harness is only meaningful if it killed the flow in mid-stream.
        assert all(0 < read < EVENTS for _s, read in kills), kills
        run_until_caught_up(crashed, tmp_path / "crash.log", timeout_s=240)

        client: redis.Redis = redis.Redis.from_url(pulse_settings.redis)
        expected = redis_state(reference, client)
        actual = redis_state(crashed, client)
        assert len(expected) > 1000
        assert any(key.startswith("rule:") for key in expected), "rule counts are compared too"
        served = [key for key, value in expected.items() if key.endswith(":profile")]
        live = [key for key in served if b"nba" in dict(expected[key])]
        assert len(live) > 1000, "live next-best-action decisions are compared too"
        assert compare(expected, actual) == []
        # Pending waits were in the state at the kills: none lost, none doubled.
        triggers = topic_records(reference, reference.triggers_topic)
        decisions = topic_records(reference, reference.decisions_topic)
        assert len(triggers) > 100 and len(decisions) > len(triggers)
        assert (
            compare_records("triggers", triggers, topic_records(crashed, crashed.triggers_topic))
            == []
        )
        assert (
            compare_records("decisions", decisions, topic_records(crashed, crashed.decisions_topic))
            == []
        )
        # Next-best-action: the same decisions (ids, actions, propensities) and
        # the same outcomes, though one policy learns from every customer and
        # the crashes cut the stream into other batches.
        nba = topic_records(reference, reference.nba_topic)
        assert len(nba) > 1000
        assert compare_records("nba", nba, topic_records(crashed, crashed.nba_topic)) == []
    finally:
        _cleanup(reference)
        _cleanup(crashed)
