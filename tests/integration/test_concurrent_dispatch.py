"""Many sends at once through the real dispatcher, Kafka, Redis and HTTP
receivers: a slow endpoint holds up only its own triggers, each customer's
triggers arrive in the order they were fired (retries included), the consumer
reads only so far ahead, a stop lets the sends under way finish, and the
committed offsets reach the end only once every trigger is done."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from dispatch.service import Delivery, Dispatcher
from engine.triggers import Trigger
from pulse.settings import Settings
from pulse.sinks import WebhookReceiver
from tests.helpers import consume, produce, wait_for
from tests.integration.test_webhook_dispatch import (
    SECRET,
    dispatching,
    dlq_headers,
    routed,
    send,
    trigger,
)


def fired(n: int, customer: str, template: str = "tier-upgrade") -> Trigger:
    return trigger(n, customer=customer, template=template)


def committed_and_end(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """The dispatcher group's committed offsets and the topic's end offsets."""
    topic = settings.triggers_topic
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"{settings.consumer_group_prefix}.dispatch",
        }
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    finally:
        consumer.close()
    return committed, ends


def all_committed(settings: Settings) -> bool:
    """Every partition that has records committed up to its end."""
    committed, ends = committed_and_end(settings)
    return all(committed[p] == end for p, end in ends.items() if end > 0)


@contextmanager
def dispatching_counted(settings: Settings) -> Iterator[tuple[Dispatcher, list[int]]]:
    """A running dispatcher, and the most triggers it ever held at once."""
    dispatcher = Dispatcher(settings)
    peak = [0]
    submit = dispatcher.pool.submit

    def counting_submit(job: Delivery, lane: Hashable) -> None:
        submit(job, lane)
        peak[0] = max(peak[0], dispatcher.pool.pending)

    dispatcher.pool.submit = counting_submit  # type: ignore[method-assign]
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    thread.start()
    try:
        yield dispatcher, peak
    finally:
        dispatcher.stopping.set()
        thread.join(30)
    assert not thread.is_alive()


def in_flight(dispatcher: Any, state: str) -> float | None:
    value: float | None = dispatcher.metrics.registry.get_sample_value(
        "pulse_dispatch_in_flight", {"state": state}
    )
    return value


def test_a_slow_endpoint_does_not_hold_up_the_others(pulse_settings: Settings) -> None:
    with (
        WebhookReceiver(SECRET, delay_s=3.0) as slow,
        WebhookReceiver(SECRET) as fast,
    ):
        settings = routed(
            pulse_settings,
            fast.url,
            dispatch_concurrency=8,
            webhook_endpoints={"slow-report": {"url": slow.url, "secret": SECRET}},
        )
        # The slow ones first, on both partitions: a dispatcher sending one at
        # a time would deliver nothing else for three seconds per slow trigger.
        triggers = [fired(n, f"s-{n}", "slow-report") for n in range(4)]
        triggers += [fired(n, f"f-{n}") for n in range(4, 24)]
        send(settings, *triggers)
        first_slow: dict[int, int] = {}
        for record in consume(settings, settings.triggers_topic, len(triggers)):
            if b"slow-report" in (record.value() or b""):
                first_slow.setdefault(record.partition() or 0, record.offset() or 0)
        with dispatching(settings) as dispatcher:
            wait_for(lambda: len(fast.accepted) == 20, 30, "the fast endpoint's triggers")
            # The receiver has answered the fast ones; the dispatcher records
            # each answer a moment later (longer on a loaded machine).
            wait_for(lambda: in_flight(dispatcher, "sending") == 4, 10, "the fast ones recorded")
            assert slow.accepted == {}  # all four still being answered
            # A partition commits nothing past its unfinished slow triggers.
            committed, _ends = committed_and_end(settings)
            for partition, offset in first_slow.items():
                assert committed[partition] <= offset, (partition, committed)
            wait_for(lambda: len(slow.accepted) == 4, 30, "the slow endpoint's triggers")
            wait_for(lambda: all_committed(settings), 10, "every offset committed")
            assert in_flight(dispatcher, "sending") == 0
        assert dispatcher.delivered == 24
    assert set(fast.accepted.values()) == {1} and set(slow.accepted.values()) == {1}


def test_each_customers_triggers_arrive_in_the_order_they_were_fired(
    pulse_settings: Settings,
) -> None:
    """Random answer times and retriable failures (503s) on one endpoint; few
    threads, so the consumer also pauses while the pool is full."""
    rng = random.Random(5)
    customers = [f"c-{i}" for i in range(6)]
    fired_order = [rng.choice(customers) for _ in range(120)]
    triggers = [fired(n, customer) for n, customer in enumerate(fired_order)]
    statuses = [503 if rng.random() < 0.15 else 200 for _ in range(150)]
    jitter = random.Random(6)
    jitter_lock = threading.Lock()

    def answer_time() -> float:
        with jitter_lock:
            return jitter.uniform(0.0, 0.03)

    with WebhookReceiver(SECRET, statuses=statuses, delay_s=answer_time) as receiver:
        settings = routed(
            pulse_settings,
            receiver.url,
            dispatch_concurrency=3,
            dispatch_max_attempts=30,
            breaker_failures=1000,  # the 503s are this test's noise, not an outage
        )
        send(settings, *triggers)
        with dispatching_counted(settings) as (dispatcher, peak):
            wait_for(lambda: len(receiver.accepted) == 120, 60, "every trigger")
            wait_for(lambda: all_committed(settings), 10, "every offset committed")
        assert dispatcher.retries > 0
    assert set(receiver.accepted.values()) == {1}
    arrived: dict[str, list[int]] = {c: [] for c in customers}
    for body in receiver.bodies():
        n = int(body["data"]["trigger_id"].removeprefix("trig-"))
        arrived[body["data"]["customer_id"]].append(n)
    for customer in customers:
        assert arrived[customer] == [n for n, c in enumerate(fired_order) if c == customer]
    assert peak[0] <= 4 * 3  # read ahead at most 4 x dispatch_concurrency


def test_a_pool_full_for_long_pauses_the_partitions_and_reads_no_further(
    pulse_settings: Settings,
) -> None:
    """Answers taking longer than _PAUSE_AFTER_S: nothing finishes meanwhile."""
    with WebhookReceiver(SECRET, delay_s=1.2) as receiver:
        settings = routed(pulse_settings, receiver.url, dispatch_concurrency=2)
        send(settings, *(fired(n, f"c-{n}") for n in range(10)))
        with dispatching_counted(settings) as (dispatcher, peak):
            wait_for(lambda: len(receiver.accepted) == 10, 60, "every trigger")
            wait_for(lambda: all_committed(settings), 10, "every offset committed")
        assert dispatcher.tally["pauses"] >= 1
    assert peak[0] <= 4 * 2
    assert set(receiver.accepted.values()) == {1}


def test_a_stop_lets_the_sends_under_way_finish_and_commits_them(
    pulse_settings: Settings,
) -> None:
    with WebhookReceiver(SECRET, delay_s=1.0) as receiver:
        settings = routed(pulse_settings, receiver.url, dispatch_concurrency=8)
        send(settings, *(fired(n, f"c-{n}") for n in range(6)))
        with dispatching(settings) as dispatcher:
            wait_for(lambda: in_flight(dispatcher, "sending") == 6, 30, "six sends under way")
            # Leaving the block stops the dispatcher now, a second before the
            # receiver answers.
        assert len(receiver.accepted) == 6 and dispatcher.delivered == 6
        assert all_committed(settings)
        with dispatching(settings) as again:
            time.sleep(3.0)  # joins the group, reads from the committed offsets
        assert again.duplicates == 0 and again.delivered == 0
    assert set(receiver.accepted.values()) == {1}


def test_a_record_that_is_no_trigger_is_dead_lettered_and_the_others_go_past_it(
    pulse_settings: Settings,
) -> None:
    with WebhookReceiver(SECRET) as receiver:
        settings = routed(pulse_settings, receiver.url)
        produce(settings, settings.triggers_topic, [(b"c-1", b"{not a trigger")])
        send(settings, fired(1, "c-1"), fired(2, "c-2"))
        with dispatching(settings):
            [dead] = consume(settings, settings.triggers_dlq_topic, 1)
            wait_for(lambda: len(receiver.accepted) == 2, 30, "the triggers")
            wait_for(lambda: all_committed(settings), 10, "every offset committed")
    assert dlq_headers(dead)["pulse.reason"].startswith("undecodable trigger: ")
    assert dead.value() == b"{not a trigger"
