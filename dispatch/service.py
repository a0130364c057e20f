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
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import msgspec
import orjson
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from dispatch.backoff import Backoff
from dispatch.channels import Channel, Outcome, build_channel
from dispatch.channels import Message as ChannelMessage
from dispatch.metrics import DispatchMetrics
from engine.triggers import Trigger
from pulse.keys import RedisKeys
from pulse.settings import Settings

log = logging.getLogger(__name__)

_CLAIM_TTL_S = 30 * 24 * 3600  # remember deliveries for 30 days
_DONE = (b"sent", b"failed", b"expired")


_decode_trigger = msgspec.json.Decoder(Trigger).decode


class _Stopping(Exception):
    """A stop was asked for while a trigger waited for its next attempt: the
    batch is left uncommitted and re-read by the next dispatcher."""


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
                "fetch.wait.max.ms": "5",
                # A dispatcher that dies (SIGKILL, a lost host) keeps its
                # partitions until its session times out: 10 s rather than
                # librdkafka's 45 s bounds how long its triggers wait.
                "session.timeout.ms": "10000",
                "heartbeat.interval.ms": "1000",
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
        self.delivered = 0
        self.duplicates = 0
        self.expired = 0
        self.failed = 0
        self.retries = 0

    def run(self) -> None:
        self.consumer.subscribe([self.settings.triggers_topic])
        log.info(
            "dispatcher consuming %s, channel %s", self.settings.triggers_topic, self.channel.name
        )
        try:
            while not self.stopping.is_set():
                msgs = self.consumer.consume(num_messages=200, timeout=0.1)
                handled = 0
                try:
                    for msg in msgs:
                        handled += self._handle(msg)
                except _Stopping:
                    break
                if not handled:
                    # Nothing but errors or end-of-partition notices: there is
                    # no offset to commit, and librdkafka says so with an error.
                    continue
                self.producer.flush(10)
                try:
                    self.consumer.commit(asynchronous=False)
                except KafkaException as exc:
                    # A rebalance took the partitions meanwhile: their new
                    # reader re-reads these records, and the recorded outcomes
                    # make it skip them.
                    log.warning("commit failed (%s): the records will be read again", exc)
        finally:
            self.consumer.close()
            self.producer.flush(10)
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

    def _handle(self, msg: Message) -> bool:
        """Deliver (or skip, or dead-letter) one record; False for a consumer
        error, which carries no offset."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return False
        self._deliver(msg)
        return True

    def _deliver(self, msg: Message) -> None:
        raw = msg.value() or b""
        try:
            trigger = _decode_trigger(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._dead_letter(raw, f"undecodable trigger: {exc}", msg)
            self.metrics.dead_letters.labels("unknown").inc()
            return
        started = time.monotonic()
        channel = trigger.channel if self.channel.name == "routed" else self.channel.name
        key = self.keys.delivery(trigger.trigger_id)
        if trigger.deadline < time.time():
            # Too late to be worth sending (a replay of old history, a long
            # outage): recorded, not delivered.
            if self.redis.set(key, "expired", nx=True, ex=_CLAIM_TTL_S):
                self.expired += 1
                self.metrics.deliveries.labels(channel, "expired").inc()
                log.info(
                    "trigger %s (%s) expired %.0f s ago: not sent",
                    trigger.trigger_id,
                    trigger.rule_id,
                    time.time() - trigger.deadline,
                )
            return
        if not self._claim(key, trigger.trigger_id):
            self.duplicates += 1
            self.metrics.deliveries.labels(channel, "duplicate").inc()
            return
        message = ChannelMessage(
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
        outcome, attempts = self._attempt(message, channel)
        self.metrics.delivery_seconds.labels(channel).observe(time.monotonic() - started)
        self.metrics.deliveries.labels(channel, outcome.status).inc()
        if outcome.status == "sent":
            self.redis.set(key, "sent", ex=_CLAIM_TTL_S)
            self.delivered += 1
        else:
            # Dead-lettered before the claim says so: a crash in between
            # retries the trigger rather than losing it.
            self.failed += 1
            log.warning(
                "trigger %s (%s) failed on %s after %d attempt(s): %s",
                trigger.trigger_id,
                trigger.rule_id,
                channel,
                attempts,
                outcome.detail,
            )
            self._dead_letter(
                raw,
                outcome.detail,
                msg,
                extra=[
                    ("pulse.trigger_id", trigger.trigger_id.encode()),
                    ("pulse.channel", channel.encode()),
                    ("pulse.attempts", str(attempts).encode()),
                ],
            )
            self.producer.flush(10)
            self.metrics.dead_letters.labels(channel).inc()
            self.redis.set(key, "failed", ex=_CLAIM_TTL_S)
        self._report_outcome(trigger, channel, outcome)

    def _claim(self, key: str, trigger_id: str) -> bool:
        """Take the trigger's lease; False when it is done already (sent, failed
        and dead-lettered, or expired).

        The lease (``dispatch_lease_s``, extended before each retry by its
        backoff) says a dispatcher is sending it now. Another one that reads the trigger too (a
        rebalance moved the partition mid-send) waits for that outcome instead
        of sending a second copy; after a crash the lease runs out and the
        trigger is sent again with the same idempotency key.
        """
        lease_ms = int(self.settings.dispatch_lease_s * 1000)
        waited = False
        while True:
            if self.redis.set(key, "sending", nx=True, px=lease_ms):
                if waited:
                    log.info("trigger %s: the previous holder's lease ran out; sending", trigger_id)
                return True
            previous = self.redis.get(key)
            if previous in _DONE:
                log.debug("trigger %s already %s: skipped", trigger_id, previous)
                return False
            if previous is not None and not waited:
                waited = True
                log.info(
                    "trigger %s is being sent by another dispatcher (or one that crashed): "
                    "waiting for its outcome or its lease (at most %.0f s)",
                    trigger_id,
                    self.settings.dispatch_lease_s,
                )
            if self.stopping.wait(0.05):
                raise _Stopping

    def _attempt(self, message: ChannelMessage, channel: str) -> tuple[Outcome, int]:
        """Send until sent, permanently failed, or out of attempts."""
        failures = 0
        key = self.keys.delivery(message.idempotency_key)
        lease_ms = int(self.settings.dispatch_lease_s * 1000)
        while True:
            began = time.monotonic()
            outcome = self.channel.send(message)
            self.metrics.attempt_seconds.labels(channel).observe(time.monotonic() - began)
            if outcome.status != "retry":
                return outcome, failures + 1
            failures += 1
            if failures >= self.settings.dispatch_max_attempts:
                return Outcome("failed", f"gave up after {failures} attempts: {outcome.detail}"), (
                    failures
                )
            delay = self.backoff.delay(failures, outcome.retry_after_s)
            self.retries += 1
            self.metrics.retries.labels(channel).inc()
            log.info(
                "trigger %s: %s; attempt %d in %.2f s",
                message.idempotency_key,
                outcome.detail,
                failures + 1,
                delay,
            )
            # The lease covers the wait and the next attempt (the claim's own
            # covers the first one).
            self.redis.set(key, "sending", px=lease_ms + int(delay * 1000))
            if self.stopping.wait(delay):
                raise _Stopping

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
        self.producer.produce(
            self.settings.events_topic,
            key=trigger.customer_id.encode(),
            value=orjson.dumps(event),
        )
        self.producer.poll(0)

    def _dead_letter(
        self,
        raw: bytes,
        reason: str,
        msg: Message,
        extra: list[tuple[str, bytes]] | None = None,
    ) -> None:
        log.warning(
            "dead letter trigger at %s[%s]@%s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            reason,
        )
        self.producer.produce(
            self.settings.triggers_dlq_topic,
            value=raw,
            headers=[
                ("pulse.reason", reason.encode()),
                ("pulse.source.topic", str(msg.topic()).encode()),
                ("pulse.source.partition", str(msg.partition()).encode()),
                ("pulse.source.offset", str(msg.offset()).encode()),
                *(extra or []),
            ],
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
