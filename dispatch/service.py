"""The dispatcher: consumes ``pulse.triggers`` and delivers each trigger once.

Exactly-once delivery rests on the trigger id (deterministic per rule, customer
and originating event). Before sending, the dispatcher claims the id in Redis
with SET NX; a trigger whose id is already claimed as sent (or as failed and
dead-lettered) is skipped, so a replayed or redelivered trigger never reaches
the customer twice. Offsets are committed only after the outcome is recorded,
so a crash re-reads, never skips.

A channel makes one attempt and says whether a failure is worth another
(``dispatch.channels.base``); the dispatcher retries those with full-jitter
exponential backoff, up to ``dispatch_max_attempts``. A permanent failure or
exhausted retries put the trigger on ``<prefix>.triggers.dlq`` with the
reason, and every outcome goes back to the events topic as a message event.

Up to ``dispatch_concurrency`` sends are under way at once
(``dispatch.pool``): a slow endpoint holds up only its own triggers, a retry
waits on a timer rather than a thread, and a customer's triggers still go one
after the other in the order read. Triggers finish out of order, so each
partition commits only up to its oldest unfinished one
(``dispatch.offsets``). The consumer reads at most ``_READ_AHEAD`` times the
concurrency ahead, then no further; when nothing finishes for a second it
pauses its partitions (and keeps polling, so the group keeps it) until half
of that has finished.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

import msgspec
import orjson
import redis
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from dispatch.backoff import Backoff
from dispatch.channels import Channel, Outcome, build_channel
from dispatch.channels import Message as ChannelMessage
from dispatch.metrics import DispatchMetrics
from dispatch.offsets import PartitionProgress
from dispatch.pool import DeliveryPool
from engine.triggers import Trigger
from pulse.keys import RedisKeys
from pulse.settings import Settings

log = logging.getLogger(__name__)

_CLAIM_TTL_S = 30 * 24 * 3600  # remember deliveries for 30 days
_DONE = (b"sent", b"failed", b"expired")
_READ_AHEAD = 4  # triggers read and not finished, per unit of dispatch_concurrency
# A trigger another dispatcher holds is looked at again after 50 ms, then
# less and less often, up to every second (a crashed holder's lease lasts
# dispatch_lease_s).
_LEASE_RECHECK_S = (0.05, 1.0)
_PAUSE_AFTER_S = 1.0  # of a full pool, before the partitions are paused
_COMMIT_EVERY_S = 0.2
_ACK_TIMEOUT_S = 10.0  # for Kafka to acknowledge an outcome event or a dead letter


_decode_trigger = msgspec.json.Decoder(Trigger).decode


@dataclass(eq=False)
class Delivery:
    """One trigger record on its way: read, claimed, attempted, recorded."""

    record: Message
    partition: int
    offset: int
    progress: PartitionProgress  # of its partition, while this dispatcher has it
    trigger: Trigger | None  # None: the record is not a trigger (``problem`` says why)
    problem: str = ""
    read_at: float = field(default_factory=time.monotonic)
    claimed: bool = False
    lease_checks: int = 0  # found another dispatcher's lease on it
    failures: int = 0  # retriable failures so far


class Tally:
    """What a dispatcher did, counted from all its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def __getitem__(self, what: str) -> int:
        with self._lock:
            return self._counts[what]


class Dispatcher:
    def __init__(self, settings: Settings, channel: Channel | None = None) -> None:
        self.settings = settings
        self.keys = RedisKeys(settings.redis_prefix)
        self.redis: redis.Redis = redis.Redis.from_url(settings.redis)
        self.channel = channel or build_channel(settings, self.redis)
        self.backoff = Backoff(settings.dispatch_backoff_s, settings.dispatch_backoff_max_s)
        self.metrics = DispatchMetrics()
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka,
                "group.id": f"{settings.consumer_group_prefix}.dispatch",
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
                # The broker answers a fetch as soon as a record arrives, so a
                # long wait costs no latency, only fewer idle round trips.
                "fetch.wait.max.ms": "100",
                # A dispatcher that dies (SIGKILL, a lost host) keeps its
                # partitions until its session times out: 10 s rather than
                # librdkafka's 45 s bounds how long its triggers wait.
                "session.timeout.ms": "10000",
                "heartbeat.interval.ms": "1000",
                # What librdkafka fetches ahead while the pool is full: about
                # 4 MB (not its default 64 MB).
                "queued.min.messages": "1000",
                "queued.max.messages.kbytes": "4096",
            }
        )
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka,
                "enable.idempotence": "true",
                "acks": "all",
                "linger.ms": "1",
            }
        )
        self.stopping = threading.Event()
        self.tally = Tally()
        self._finished: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self.pool: DeliveryPool[Delivery] = DeliveryPool(
            settings.dispatch_concurrency, self._step, self._finished.put, name="dispatch"
        )
        self.metrics.in_flight.labels("sending").set_function(lambda: self.pool.running)
        self.metrics.in_flight.labels("waiting").set_function(
            lambda: self.pool.pending - self.pool.running
        )
        self._progress: dict[int, PartitionProgress] = {}
        self._read_ahead = _READ_AHEAD * settings.dispatch_concurrency
        self._paused = False
        self._full_since: float | None = None  # the pool full, not paused yet
        self._assignment_changed = False
        self._committed_at = 0.0
        self._acks_served = threading.Event()

    @property
    def delivered(self) -> int:
        return self.tally["delivered"]

    @property
    def duplicates(self) -> int:
        return self.tally["duplicates"]

    @property
    def expired(self) -> int:
        return self.tally["expired"]

    @property
    def failed(self) -> int:
        return self.tally["failed"]

    @property
    def retries(self) -> int:
        return self.tally["retries"]

    # The consumer's thread --------------------------------------------------

    def run(self) -> None:
        topic = self.settings.triggers_topic
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)
        acks = threading.Thread(target=self._serve_acks, name="dispatch-acks", daemon=True)
        acks.start()
        log.info(
            "dispatcher consuming %s, channel %s, %d sends at once",
            topic,
            self.channel.name,
            self.settings.dispatch_concurrency,
        )
        try:
            while not self.stopping.is_set():
                if self.pool.error is not None:
                    raise RuntimeError("a delivery failed unexpectedly") from self.pool.error
                if self._pace():
                    room = max(1, min(500, self._read_ahead - self.pool.pending))
                    # poll() returns with the first record; consume() would
                    # wait for a whole batch or its timeout (25 ms on average
                    # per trigger when they come one by one).
                    first = self.consumer.poll(0.05)
                    if first is not None:
                        self._accept(first)
                        if room > 1:
                            for record in self.consumer.consume(room - 1, timeout=0):
                                self._accept(record)
                self._collect()
                if time.monotonic() - self._committed_at >= _COMMIT_EVERY_S:
                    self._commit()
        finally:
            try:
                # Sends under way finish (their leases bound the wait) and
                # what finished is committed; the rest is read again.
                self._let_go(set(self._progress))
            finally:
                self.consumer.close()
                self.pool.close()
                self.producer.flush(10)
                self._acks_served.set()
                acks.join(5)
                self.channel.close()
                self.redis.close()
                log.info(
                    "dispatcher stopped: %d delivered, %d failed (dead-lettered), %d retries, "
                    "%d duplicates skipped, %d expired",
                    self.delivered,
                    self.failed,
                    self.retries,
                    self.duplicates,
                    self.expired,
                )

    def _accept(self, record: Message) -> None:
        """Hand one record to the pool, in its customer's lane."""
        err = record.error()
        if err is not None:
            # Errors and end-of-partition notices carry no offset to commit.
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        partition, offset = record.partition(), record.offset()
        if partition is None or offset is None:
            return
        progress = self._progress.setdefault(partition, PartitionProgress())
        try:
            progress.read(offset)
        except ValueError as exc:
            # Read again while its first reading is still tracked: that one
            # delivers it.
            log.warning("partition %d: %s: skipped", partition, exc)
            return
        lane: Hashable
        try:
            trigger = _decode_trigger(record.value() or b"")
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            delivery = Delivery(record, partition, offset, progress, None, problem=str(exc))
            lane = (partition, offset)  # nobody's: it goes to the dead-letter topic
        else:
            delivery = Delivery(record, partition, offset, progress, trigger)
            lane = trigger.customer_id
        self.pool.submit(delivery, lane)

    def _collect(self) -> None:
        """Mark the offsets of finished deliveries."""
        while True:
            try:
                delivery = self._finished.get_nowait()
            except queue.Empty:
                return
            delivery.progress.finish(delivery.offset)

    def _commit(self, partitions: set[int] | None = None) -> None:
        """Commit, per partition, the offset after its oldest run of finished
        triggers, where that moved."""
        self._committed_at = time.monotonic()
        offsets = []
        for partition, progress in self._progress.items():
            due = progress.commit_due()
            if due is not None and (partitions is None or partition in partitions):
                offsets.append(TopicPartition(self.settings.triggers_topic, partition, due))
        if not offsets:
            return  # nothing new: librdkafka refuses a commit without offsets
        try:
            answered = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partitions meanwhile: their new reader
            # re-reads these records, and the recorded outcomes make it skip
            # them.
            log.warning("commit failed (%s): the records will be read again", exc)
            return
        for tp in answered or offsets:
            if tp.error is not None:
                log.warning("commit of partition %d failed (%s)", tp.partition, tp.error)
            elif tp.partition in self._progress:
                self._progress[tp.partition].committed = tp.offset

    def _pace(self) -> bool:
        """Whether to read now: not while the pool holds ``_read_ahead``
        triggers. A short wait for room reads nothing (librdkafka's prefetch
        queue, bounded by the consumer's settings, holds what comes); a pool
        full for ``_PAUSE_AFTER_S`` pauses the partitions and reads on, which
        then brings only rebalances, so the consumer stays in its group, until
        half of the triggers are done. Not pausing at once spares the refetch
        and the second or so a resumed partition waits for its next fetch."""
        if self._assignment_changed:
            self._assignment_changed = False
            if self._paused:  # new partitions wait too
                self._apply_pause(True)
        pending = self.pool.pending
        if self._paused:
            if pending <= self._read_ahead // 2:
                self._apply_pause(False)
            return True
        if pending < self._read_ahead:
            self._full_since = None
            return True
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        if now - self._full_since < _PAUSE_AFTER_S:
            self.pool.wait_room(self._read_ahead, 0.05)
            return False
        self._apply_pause(True)
        self.tally.add("pauses")
        log.debug("%d triggers under way or waiting: partitions paused", pending)
        return True

    def _apply_pause(self, pause: bool) -> None:
        assignment = self.consumer.assignment()
        if assignment:
            if pause:
                self.consumer.pause(assignment)
            else:
                self.consumer.resume(assignment)
        self._paused, self._full_since = pause, None

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in partitions))
        for tp in partitions:
            self._progress[tp.partition] = PartitionProgress()
        self._assignment_changed = True

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._let_go({tp.partition for tp in partitions})
        if self._paused:
            consumer.resume(partitions)  # none comes back to this reader paused
        self._assignment_changed = True

    def _let_go(self, partitions: set[int]) -> None:
        """Stop the work of these partitions before another reader gets them:
        triggers not started (queued behind their customer, waiting for a
        retry or for another dispatcher's lease) are dropped, for the next
        reader to read again; sends under way are waited for, at most the
        lease; then what finished is committed."""
        if not partitions:
            return

        def theirs(delivery: Delivery) -> bool:
            return delivery.partition in partitions

        dropped = self.pool.drop(theirs)
        if not self.pool.wait_idle(theirs, self.settings.dispatch_lease_s):
            log.warning(
                "sends of partitions %s still under way after %.0f s: left to their leases",
                sorted(partitions),
                self.settings.dispatch_lease_s,
            )
        self._collect()
        self._commit(partitions)
        for partition in partitions:
            self._progress.pop(partition, None)
        if dropped:
            log.info(
                "partitions %s let go: %d trigger(s) not finished, left to their next reader",
                sorted(partitions),
                len(dropped),
            )

    def _serve_acks(self) -> None:
        """Kafka's acknowledgements of outcome events and dead letters reach
        the threads waiting for them through this thread's polls."""
        while not self._acks_served.is_set():
            self.producer.poll(0.1)

    # The pool's threads -----------------------------------------------------

    def _step(self, delivery: Delivery) -> float | None:
        """The next step of one delivery: None when its outcome is recorded,
        else the seconds until the step after."""
        trigger = delivery.trigger
        if trigger is None:
            self._dead_letter(delivery.record, f"undecodable trigger: {delivery.problem}")
            self.metrics.dead_letters.labels("unknown").inc()
            return None
        channel = trigger.channel if self.channel.name == "routed" else self.channel.name
        key = self.keys.delivery(trigger.trigger_id)
        if not delivery.claimed:
            if trigger.deadline < time.time():
                self._expire(trigger, channel, key)
                return None
            claimed = self._claim(key, trigger.trigger_id, delivery)
            if claimed is None:
                first, most = _LEASE_RECHECK_S
                return min(most, first * 2.0 ** min(delivery.lease_checks - 1, 10))
            if not claimed:
                self.tally.add("duplicates")
                self.metrics.deliveries.labels(channel, "duplicate").inc()
                return None
            delivery.claimed = True
        began = time.monotonic()
        outcome = self.channel.send(_message_of(trigger))
        self.metrics.attempt_seconds.labels(channel).observe(time.monotonic() - began)
        if outcome.status == "retry":
            delivery.failures += 1
            if delivery.failures < self.settings.dispatch_max_attempts:
                return self._retry_later(delivery, trigger, channel, key, outcome)
            outcome = Outcome(
                "failed", f"gave up after {delivery.failures} attempts: {outcome.detail}"
            )
            attempts = delivery.failures
        else:
            attempts = delivery.failures + 1
        self._record(delivery, trigger, channel, key, outcome, attempts)
        return None

    def _expire(self, trigger: Trigger, channel: str, key: str) -> None:
        """Too late to be worth sending (a replay of old history, a long
        outage): recorded, not delivered."""
        if self.redis.set(key, "expired", nx=True, ex=_CLAIM_TTL_S):
            self.tally.add("expired")
            self.metrics.deliveries.labels(channel, "expired").inc()
            log.info(
                "trigger %s (%s) expired %.0f s ago: not sent",
                trigger.trigger_id,
                trigger.rule_id,
                time.time() - trigger.deadline,
            )

    def _claim(self, key: str, trigger_id: str, delivery: Delivery) -> bool | None:
        """Take the trigger's lease: True when taken, False when the trigger is
        done already (sent, failed and dead-lettered, or expired), None while
        another dispatcher holds it.

        The lease (``dispatch_lease_s``, extended before each retry by its
        backoff) says a dispatcher is sending it now. Another one that reads
        the trigger too (a rebalance moved the partition mid-send) waits for
        that outcome instead of sending a second copy; after a crash the lease
        runs out and the trigger is sent again with the same idempotency key.
        """
        lease_ms = int(self.settings.dispatch_lease_s * 1000)
        if self.redis.set(key, "sending", nx=True, px=lease_ms):
            if delivery.lease_checks:
                log.info("trigger %s: the previous holder's lease ran out; sending", trigger_id)
            return True
        previous = self.redis.get(key)
        if previous in _DONE:
            log.debug("trigger %s already %s: skipped", trigger_id, previous)
            return False
        delivery.lease_checks += 1
        if delivery.lease_checks == 1:
            log.info(
                "trigger %s is being sent by another dispatcher (or one that crashed): "
                "waiting for its outcome or its lease (at most %.0f s)",
                trigger_id,
                self.settings.dispatch_lease_s,
            )
        return None

    def _retry_later(
        self, delivery: Delivery, trigger: Trigger, channel: str, key: str, outcome: Outcome
    ) -> float:
        delay = self.backoff.delay(delivery.failures, outcome.retry_after_s)
        self.tally.add("retries")
        self.metrics.retries.labels(channel).inc()
        log.info(
            "trigger %s: %s; attempt %d in %.2f s",
            trigger.trigger_id,
            outcome.detail,
            delivery.failures + 1,
            delay,
        )
        # The lease covers the wait and the next attempt (the claim's own
        # covers the first one).
        lease_ms = int(self.settings.dispatch_lease_s * 1000)
        self.redis.set(key, "sending", px=lease_ms + int(delay * 1000))
        return delay

    def _record(
        self,
        delivery: Delivery,
        trigger: Trigger,
        channel: str,
        key: str,
        outcome: Outcome,
        attempts: int,
    ) -> None:
        self.metrics.delivery_seconds.labels(channel).observe(time.monotonic() - delivery.read_at)
        self.metrics.deliveries.labels(channel, outcome.status).inc()
        self.metrics.rule_deliveries.labels(trigger.rule_id, outcome.status).inc()
        if outcome.status == "sent":
            self.redis.set(key, "sent", ex=_CLAIM_TTL_S)
            self.tally.add("delivered")
        else:
            # Dead-lettered before the claim says so: a crash in between
            # retries the trigger rather than losing it.
            self.tally.add("failed")
            log.warning(
                "trigger %s (%s) failed on %s after %d attempt(s): %s",
                trigger.trigger_id,
                trigger.rule_id,
                channel,
                attempts,
                outcome.detail,
            )
            self._dead_letter(
                delivery.record,
                outcome.detail,
                extra=[
                    ("pulse.trigger_id", trigger.trigger_id.encode()),
                    ("pulse.channel", channel.encode()),
                    ("pulse.attempts", str(attempts).encode()),
                ],
            )
            self.metrics.dead_letters.labels(channel).inc()
            self.redis.set(key, "failed", ex=_CLAIM_TTL_S)
        self._report_outcome(trigger, channel, outcome)

    def _report_outcome(self, trigger: Trigger, channel: str, outcome: Outcome) -> None:
        """Send the delivery outcome back as an event so profiles learn from it
        and rule goals can attribute conversions."""
        sent = outcome.status == "sent"
        event: dict[str, object] = {
            "type": "message_sent" if sent else "message_failed",
            "event_id": f"{'sent' if sent else 'failed'}:{trigger.trigger_id}",
            "customer_id": trigger.customer_id,
            "channel": "web",
            "message_id": trigger.trigger_id,
            "message_channel": channel,
            "trigger_id": trigger.trigger_id,
            "rule_id": trigger.rule_id,
            "timestamp": _rfc3339(time.time()),
        }
        if not sent:
            event["reason"] = outcome.detail[:1000]
        self._produce_acked(
            self.settings.events_topic, orjson.dumps(event), key=trigger.customer_id.encode()
        )

    def _dead_letter(
        self,
        record: Message,
        reason: str,
        extra: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        log.warning(
            "dead letter trigger at %s[%s]@%s: %s",
            record.topic(),
            record.partition(),
            record.offset(),
            reason,
        )
        self._produce_acked(
            self.settings.triggers_dlq_topic,
            record.value() or b"",
            headers=[
                ("pulse.reason", reason.encode()),
                ("pulse.source.topic", str(record.topic()).encode()),
                ("pulse.source.partition", str(record.partition()).encode()),
                ("pulse.source.offset", str(record.offset()).encode()),
                *(extra or []),
            ],
        )

    def _produce_acked(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Produce one record and wait until Kafka has it: a delivery counts
        as finished (and its offset may be committed) only then."""
        acked = threading.Event()
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)
            acked.set()

        self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
        if not acked.wait(_ACK_TIMEOUT_S):
            log.error("Kafka did not acknowledge a record on %s in %.0f s", topic, _ACK_TIMEOUT_S)
        elif errors:
            log.error("Kafka refused a record on %s: %s", topic, errors[0])


def _message_of(trigger: Trigger) -> ChannelMessage:
    return ChannelMessage(
        idempotency_key=trigger.trigger_id,
        rule_id=trigger.rule_id,
        customer_id=trigger.customer_id,
        channel=trigger.channel,
        template=trigger.template,
        recipient=trigger.recipient,
        payload=trigger.payload,
        fired_at=trigger.fired_at,
        priority=trigger.priority,
        category=trigger.category,
    )


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def serve(settings: Settings) -> None:
    dispatcher = Dispatcher(settings)

    def _stop(signum: int, _frame: object) -> None:
        dispatcher.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    dispatcher.metrics.serve(settings)
    dispatcher.run()
