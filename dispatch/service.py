"""The dispatcher: consumes ``pulse.triggers`` and delivers each trigger once.

Exactly-once delivery rests on the trigger id (deterministic per rule, customer
and originating event). Before sending, the dispatcher claims the id in Redis
with SET NX; a trigger whose id is already claimed as sent is skipped, so a
replayed or redelivered trigger never reaches the customer twice. Offsets are
committed only after the outcome is recorded, so a crash re-reads, never skips.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import msgspec
import orjson
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer

from dispatch.channels import Channel, channel_for
from dispatch.channels import Message as ChannelMessage
from engine.triggers import Trigger
from pulse.keys import RedisKeys
from pulse.settings import Settings

log = logging.getLogger(__name__)

_CLAIM_TTL_S = 30 * 24 * 3600  # remember deliveries for 30 days


_decode_trigger = msgspec.json.Decoder(Trigger).decode


class Dispatcher:
    def __init__(self, settings: Settings, channel: Channel | None = None) -> None:
        self.settings = settings
        self.keys = RedisKeys(settings.redis_prefix)
        self.channel = channel or channel_for(settings.dispatch_channel)
        self.redis: redis.Redis = redis.Redis.from_url(settings.redis)
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka,
                "group.id": f"{settings.consumer_group_prefix}.dispatch",
                "enable.auto.commit": "false",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": "5",
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

    def run(self) -> None:
        self.consumer.subscribe([self.settings.triggers_topic])
        log.info(
            "dispatcher consuming %s, channel %s", self.settings.triggers_topic, self.channel.name
        )
        try:
            while not self.stopping.is_set():
                msgs = self.consumer.consume(num_messages=200, timeout=0.1)
                handled = sum([self._handle(msg) for msg in msgs])
                if not handled:
                    # Nothing but errors or end-of-partition notices: there is
                    # no offset to commit, and librdkafka says so with an error.
                    continue
                self.producer.flush(10)
                self.consumer.commit(asynchronous=False)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            log.info(
                "dispatcher stopped: %d delivered, %d duplicates skipped, %d expired",
                self.delivered,
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
            return
        key = self.keys.delivery(trigger.trigger_id)
        if trigger.deadline < time.time():
            # Too late to be worth sending (a replay of old history, a long
            # outage): recorded, not delivered.
            if self.redis.set(key, "expired", nx=True, ex=_CLAIM_TTL_S):
                self.expired += 1
                log.info(
                    "trigger %s (%s) expired %.0f s ago: not sent",
                    trigger.trigger_id,
                    trigger.rule_id,
                    time.time() - trigger.deadline,
                )
            return
        claimed = self.redis.set(key, "sending", nx=True, ex=_CLAIM_TTL_S)
        if not claimed:
            previous = self.redis.get(key)
            if previous == b"sent":
                self.duplicates += 1
                log.debug("trigger %s already delivered: skipped", trigger.trigger_id)
                return
            # A claim left "sending" by a crash mid-send: the channel receives
            # the same idempotency key again and is expected to deduplicate.
        outcome = self.channel.send(
            ChannelMessage(
                idempotency_key=trigger.trigger_id,
                rule_id=trigger.rule_id,
                customer_id=trigger.customer_id,
                channel=trigger.channel,
                template=trigger.template,
                recipient=trigger.recipient,
                payload=trigger.payload,
            )
        )
        self.redis.set(key, outcome.status, ex=_CLAIM_TTL_S)
        if outcome.status == "sent":
            self.delivered += 1
        else:
            log.warning(
                "trigger %s failed on %s: %s", trigger.trigger_id, self.channel.name, outcome.detail
            )
        self._report_outcome(trigger, outcome.status)

    def _report_outcome(self, trigger: Trigger, status: str) -> None:
        """Send the delivery outcome back as an event so profiles learn from it."""
        if status != "sent":
            return
        event = {
            "type": "message_sent",
            "event_id": f"sent:{trigger.trigger_id}",
            "customer_id": trigger.customer_id,
            "channel": "web",
            "message_id": trigger.trigger_id,
            "message_channel": self.channel.name,
            "trigger_id": trigger.trigger_id,
            "rule_id": trigger.rule_id,
            "timestamp": _rfc3339(time.time()),
        }
        self.producer.produce(
            self.settings.events_topic,
            key=trigger.customer_id.encode(),
            value=orjson.dumps(event),
        )
        self.producer.poll(0)

    def _dead_letter(self, raw: bytes, reason: str, msg: Message) -> None:
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
                ("pulse.source.offset", str(msg.offset()).encode()),
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
    dispatcher.run()
