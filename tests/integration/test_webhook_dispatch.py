"""Webhooks through the real dispatcher, Kafka and Redis, counted by the receiver.

The receiver verifies every request with the Standard Webhooks reference
library; what it accepted is the truth the tests compare against.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import orjson
import pytest
import redis
from confluent_kafka import Message as KafkaMessage
from prometheus_client.parser import text_string_to_metric_families

from dispatch.channels import Message, WebhookChannel
from dispatch.redrive import redrive
from dispatch.service import Dispatcher
from engine.triggers import Trigger
from pulse.keys import RedisKeys
from pulse.settings import Settings, WebhookEndpoint, load_settings
from pulse.sinks import WebhookReceiver
from tests.helpers import consume, produce, value_of, wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def trigger(
    n: int, channel: str = "webhook", customer: str | None = None, template: str = "tier-upgrade"
) -> Trigger:
    return Trigger(
        trigger_id=f"trig-{n}",
        rule_id="tier_upgrade",
        customer_id=customer or f"c-{n}",
        origin_event_id=f"e-{n}",
        entry=1,
        fired_at=time.time(),
        channel=channel,
        template=template,
        category="transactional",
        priority=60,
        deadline=time.time() + 3600,
        payload={"tier": "gold"},
    )


def routed(settings: Settings, url: str, **overrides: Any) -> Settings:
    return load_settings(
        environ=settings.as_environ(),
        dispatch_channel="routed",
        webhook_url=url,
        webhook_secret=SECRET,
        dispatch_backoff_s=0.01,
        dispatch_backoff_max_s=0.05,
        **overrides,
    )


@contextmanager
def dispatching(settings: Settings) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(settings)
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stopping.set()
        thread.join(30)
        assert not thread.is_alive()


def send(settings: Settings, *triggers: Trigger) -> None:
    produce(
        settings,
        settings.triggers_topic,
        [(t.customer_id.encode(), msgspec.json.encode(t)) for t in triggers],
    )


def dlq_headers(record: KafkaMessage) -> dict[str, str]:
    out: dict[str, str] = {}
    headers: list[tuple[str, bytes]] = record.headers() or []  # type: ignore[assignment]
    for name, value in headers:
        out[name] = value.decode()
    return out


def outcome_events(settings: Settings, expected: int) -> list[dict[str, Any]]:
    return [orjson.loads(value_of(m)) for m in consume(settings, settings.events_topic, expected)]


def test_an_endpoint_failing_with_500s_then_recovering_gets_the_message_once(
    pulse_settings: Settings,
) -> None:
    with WebhookReceiver(SECRET, statuses=[500, 503]) as receiver:
        settings = routed(pulse_settings, receiver.url)
        send(settings, trigger(1))
        with dispatching(settings) as dispatcher:
            wait_for(lambda: receiver.accepted, 30, "the delivery")
        assert receiver.accepted == {"trig-1": 1}
        assert [r["status"] for r in receiver.requests] == [500, 503, 200]
        assert {r["headers"]["webhook-id"] for r in receiver.requests} == {"trig-1"}
        assert dispatcher.retries == 2 and dispatcher.delivered == 1
    [sent] = outcome_events(settings, 1)
    assert sent["type"] == "message_sent" and sent["trigger_id"] == "trig-1"
    assert sent["message_channel"] == "webhook" and sent["rule_id"] == "tier_upgrade"
    assert consume(settings, settings.triggers_dlq_topic, 1, timeout_s=2) == []


def test_an_endpoint_answering_400_sends_the_trigger_to_the_dlq_with_the_reason(
    pulse_settings: Settings,
) -> None:
    with WebhookReceiver(SECRET, statuses=[400]) as receiver:
        settings = routed(pulse_settings, receiver.url)
        send(settings, trigger(2))
        with dispatching(settings):
            [dead] = consume(settings, settings.triggers_dlq_topic, 1)
        assert receiver.accepted == {} and len(receiver.requests) == 1  # not retried
    headers = dlq_headers(dead)
    assert headers["pulse.reason"].startswith("default: HTTP 400")
    assert headers["pulse.trigger_id"] == "trig-2" and headers["pulse.attempts"] == "1"
    original = msgspec.json.decode(value_of(dead), type=Trigger)  # the record as it came
    assert (original.trigger_id, original.payload) == ("trig-2", {"tier": "gold"})
    [failed] = outcome_events(settings, 1)
    assert failed["type"] == "message_failed" and failed["reason"].startswith("default: HTTP 400")
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    assert client.get(RedisKeys(settings.redis_prefix).delivery("trig-2")) == b"failed"


def test_retries_give_up_after_the_configured_attempts(pulse_settings: Settings) -> None:
    with WebhookReceiver(SECRET, statuses=[503] * 10) as receiver:
        settings = routed(pulse_settings, receiver.url, dispatch_max_attempts=3)
        send(settings, trigger(3))
        with dispatching(settings):
            [dead] = consume(settings, settings.triggers_dlq_topic, 1)
        assert len(receiver.requests) == 3 and receiver.accepted == {}
    reason = dlq_headers(dead)["pulse.reason"]
    assert reason.startswith("gave up after 3 attempts: default: HTTP 503")


def test_a_trigger_read_twice_is_delivered_once(pulse_settings: Settings) -> None:
    with WebhookReceiver(SECRET) as receiver:
        settings = routed(pulse_settings, receiver.url)
        send(settings, trigger(4), trigger(5), trigger(4))
        with dispatching(settings) as dispatcher:
            wait_for(lambda: dispatcher.duplicates == 1, 30, "the repeat to be skipped")
        assert receiver.accepted == {"trig-4": 1, "trig-5": 1}


def test_a_channel_without_configuration_is_dead_lettered_not_dropped(
    pulse_settings: Settings,
) -> None:
    with WebhookReceiver(SECRET) as receiver:
        settings = routed(pulse_settings, receiver.url)
        send(settings, trigger(6, channel="sms"))
        with dispatching(settings):
            [dead] = consume(settings, settings.triggers_dlq_topic, 1)
    reason = dlq_headers(dead)["pulse.reason"]
    assert reason == "no sms channel is configured in this dispatcher (configured: in_app, webhook)"


def test_an_unreachable_endpoint_is_retriable_and_opens_its_circuit() -> None:
    channel = WebhookChannel(
        {"default": WebhookEndpoint(url="http://127.0.0.1:9/hooks", secret=SECRET, timeout_s=1)},
        breaker_failures=2,
        breaker_reset_s=60,
    )
    message = Message(
        idempotency_key="k",
        rule_id="r",
        customer_id="c",
        channel="webhook",
        template="t",
        recipient={},
        payload={},
    )
    try:
        first, second, third = (channel.send(message) for _ in range(3))
    finally:
        channel.close()
    assert first.status == second.status == "retry" and "ConnectError" in first.detail
    assert third.status == "retry" and third.detail == "circuit open for endpoint default"
    assert third.retry_after_s == pytest.approx(60, abs=1)
    assert channel.breaker("default").state == "open"


def test_a_trigger_another_dispatcher_is_sending_waits_for_its_outcome(
    pulse_settings: Settings,
) -> None:
    """A rebalance can hand a partition over mid-send: the new reader must not
    send a second copy while the old one's lease stands."""
    with WebhookReceiver(SECRET) as receiver:
        settings = routed(pulse_settings, receiver.url, dispatch_lease_s=10.0)
        client: redis.Redis = redis.Redis.from_url(settings.redis)
        key = RedisKeys(settings.redis_prefix).delivery("trig-7")
        client.set(key, "sending", px=10_000)  # held by "another dispatcher"
        send(settings, trigger(7))
        with dispatching(settings) as dispatcher:
            time.sleep(1.0)
            assert receiver.requests == [] and dispatcher.duplicates == 0  # waiting
            client.set(key, "sent")  # the other one delivered it
            wait_for(lambda: dispatcher.duplicates == 1, 10, "the trigger to be skipped")
        assert receiver.requests == []


def test_a_crashed_dispatchers_claim_is_sent_once_its_lease_runs_out(
    pulse_settings: Settings,
) -> None:
    with WebhookReceiver(SECRET) as receiver:
        settings = routed(pulse_settings, receiver.url, dispatch_lease_s=10.0)
        client: redis.Redis = redis.Redis.from_url(settings.redis)
        key = RedisKeys(settings.redis_prefix).delivery("trig-8")
        client.set(key, "sending", px=1_500)  # left by a dispatcher killed mid-send
        send(settings, trigger(8))
        started = time.monotonic()
        with dispatching(settings):
            wait_for(lambda: receiver.accepted, 20, "the delivery")
        assert time.monotonic() - started >= 1.0
        assert receiver.accepted == {"trig-8": 1}
        assert client.get(key) == b"sent"


def test_dead_letters_are_re_driven_once_the_cause_is_fixed(
    pulse_settings: Settings, tmp_path: Any
) -> None:
    with WebhookReceiver(SECRET, statuses=[400, 400]) as receiver:
        settings = routed(pulse_settings, receiver.url)
        send(settings, trigger(9), trigger(10), trigger(11, channel="sms"))
        with dispatching(settings):
            dead = consume(settings, settings.triggers_dlq_topic, 3)
        assert len(dead) == 3 and receiver.accepted == {}
        # The endpoint accepts now (its script of 400s is used up).
        counted = redrive(settings, dry_run=True)
        assert (counted.read, counted.redriven) == (3, 3)
        report = redrive(settings, channel="webhook")
        assert (report.read, report.redriven, report.skipped) == (3, 2, 1)
        assert sum(report.reasons.values()) == 2
        with dispatching(settings):
            wait_for(lambda: len(receiver.accepted) == 2, 30, "the re-driven triggers")
        assert receiver.accepted == {"trig-9": 1, "trig-10": 1}
        # A filtered run keeps no progress: a full one sees all three again.
        everything = redrive(settings)
        assert (everything.read, everything.redriven) == (3, 3)
        with dispatching(settings) as dispatcher:
            wait_for(lambda: dispatcher.duplicates == 2, 30, "the delivered ones skipped")
            assert len(consume(settings, settings.triggers_dlq_topic, 4)) == 4  # sms again
        assert receiver.accepted == {"trig-9": 1, "trig-10": 1}
        assert redrive(settings, dry_run=True).read == 1  # only what failed since
    cli = subprocess.run(
        [sys.executable, "-m", "pulse.cli", "dispatch", "retry-dlq", "--dry-run"],
        env=dict(os.environ, **settings.as_environ()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "read 1 dead letter(s); would re-drive 1" in cli.stdout
    assert "no sms channel is configured" in cli.stdout


def test_metrics_count_deliveries_retries_and_dead_letters(pulse_settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with WebhookReceiver(SECRET, statuses=[500, 200, 400]) as receiver:
        settings = routed(pulse_settings, receiver.url, dispatch_metrics_port=port)
        send(settings, trigger(12))
        with dispatching(settings) as dispatcher:
            dispatcher.metrics.serve(settings)
            wait_for(lambda: receiver.accepted, 30, "the first delivery")
            send(settings, trigger(13))
            consume(settings, settings.triggers_dlq_topic, 1)
            wait_for(lambda: dispatcher.failed == 1, 30, "the dead letter recorded")
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("pulse_dispatch_deliveries_total", channel="webhook", outcome="sent") == 1
    assert value("pulse_dispatch_deliveries_total", channel="webhook", outcome="failed") == 1
    assert value("pulse_dispatch_retries_total", channel="webhook") == 1
    assert value("pulse_dispatch_dead_letters_total", channel="webhook") == 1
    assert value("pulse_dispatch_attempt_seconds_count", channel="webhook") == 3
    assert value("pulse_dispatch_delivery_seconds_count", channel="webhook") == 2
    assert value("pulse_dispatch_dlq_records") == 1
