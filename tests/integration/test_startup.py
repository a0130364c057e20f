"""Start-up on a Kafka without Pulse's topics: one clear line, or the topics made.

Seen by a new user: with a new ``topic_prefix`` the dataflow died with a Rust
panic and a long traceback, and the dispatcher crashed on shutdown with
"Commit failed: Local: No offset stored".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from dispatch.service import Dispatcher
from pulse.services.kafka import require_topics
from pulse.settings import Settings, load_settings
from tests.helpers import PulseProcess, wait_for


def _fresh(live: Settings, tmp_path: Path, **overrides: object) -> Settings:
    tag = f"t{uuid.uuid4().hex[:10]}"
    fields: dict[str, object] = {
        "kafka_bootstrap": live.kafka_bootstrap,
        "redis_url": live.redis_url,
        "cache_dir": live.cache_dir,
        "local_kafka_port": live.local_kafka_port,
        "local_redis_port": live.local_redis_port,
        "topic_prefix": tag,
        "redis_prefix": tag,
        "consumer_group_prefix": tag,
        "partitions": 2,
        "recovery_dir": str(tmp_path / "recovery"),
        "redis_persistence": False,
    }
    fields.update(overrides)
    return load_settings(environ={}, **fields)  # type: ignore[arg-type]


def _topics(settings: Settings) -> set[str]:
    admin = AdminClient({"bootstrap.servers": settings.kafka})
    return set(admin.list_topics(timeout=10).topics)


@pytest.fixture
def cleanup() -> Iterator[list[Settings]]:
    made: list[Settings] = []
    yield made
    for settings in made:
        admin = AdminClient({"bootstrap.servers": settings.kafka})
        for fut in admin.delete_topics(list(settings.all_topics), operation_timeout=10).values():
            with contextlib.suppress(Exception):
                fut.result()


@pytest.mark.parametrize("command", [["run", "--no-recovery"], ["dispatch"], ["api"]])
def test_on_a_kafka_pulse_does_not_own_a_missing_topic_is_one_line_naming_the_fix(
    live_services: Settings, tmp_path: Path, command: list[str]
) -> None:
    settings = _fresh(live_services, tmp_path, kafka_bootstrap=live_services.kafka)
    assert not settings.kafka_managed
    env = dict(os.environ, **settings.as_environ())
    done = subprocess.run(
        [sys.executable, "-m", "pulse.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"topic {settings.events_topic} " in lines[0]
    assert "pulse services up" in lines[0] and "kafka-topics.sh --create" in lines[0]
    assert "Traceback" not in done.stderr and "panic" not in done.stderr
    assert settings.events_topic not in _topics(settings)  # nothing created on their Kafka


def test_on_its_own_kafka_pulse_creates_the_missing_topics(
    live_services: Settings, tmp_path: Path, cleanup: list[Settings]
) -> None:
    if not live_services.kafka_managed:
        pytest.skip("runs against an external Kafka (PULSE_KAFKA_BOOTSTRAP)")
    settings = _fresh(live_services, tmp_path)
    cleanup.append(settings)
    require_topics(settings, "test")
    assert set(settings.all_topics) <= _topics(settings)
    require_topics(settings, "test")  # and a second start finds them


def test_a_dispatcher_that_consumed_nothing_stops_cleanly(
    pulse_settings: Settings, tmp_path: Path
) -> None:
    dispatcher = PulseProcess(pulse_settings, tmp_path, "dispatcher", "dispatch")
    try:
        wait_for(lambda: "dispatcher consuming" in dispatcher.log_text(), 30, "dispatcher up")
        dispatcher.proc.send_signal(signal.SIGTERM)
        assert dispatcher.proc.wait(20) == 0
    finally:
        dispatcher.stop()
    log = dispatcher.log_text()
    assert "dispatcher stopped: 0 delivered" in log
    assert "Traceback" not in log and "No offset stored" not in log


def test_a_dispatcher_told_of_a_missing_topic_by_its_consumer_does_not_crash(
    live_services: Settings, tmp_path: Path, cleanup: list[Settings]
) -> None:
    """The consumer's errors carry no offset: committing after them failed with
    "No offset stored" and took the dispatcher down (the topic can also vanish
    or lose its leader while a dispatcher runs)."""
    settings = _fresh(live_services, tmp_path)
    cleanup.append(settings)
    dispatcher = Dispatcher(settings)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            dispatcher.run()
        except BaseException as exc:  # the test reports it
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(3)  # the consumer reports the missing topic within this
    dispatcher.stopping.set()
    thread.join(20)
    assert not failure, failure
