"""Keeps a dataflow process's rule book in step with deployments on the control topic.

Every process reads every deployment itself (a consumer of its own, outside
the dataflow's partitioned sources), so each worker holds every version. A
version applies from its effective event time, which ``pulse rules deploy``
sets a little after publishing: all workers switch at that same point of the
stream, whenever each of them happened to receive the message.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from engine.control import RulesDeployed
from engine.rules.ruleset import RuleBook
from engine.rules.validate import load
from pulse.deployments import parse, read_deployments
from pulse.keys import RedisKeys
from pulse.settings import Settings

log = logging.getLogger(__name__)


class RuleRegistry:
    def __init__(
        self,
        settings: Settings,
        book: RuleBook,
        stream_time: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.book = book
        self._stream_time = stream_time
        self._seen: set[tuple[str, float]] = set()
        self._stop = threading.Event()

    def catch_up(self) -> int:
        """Load every deployment so far, before the flow reads any event."""
        for deployment in read_deployments(self.settings):
            self.add(deployment)
        self._publish()
        return len(self._seen)

    def add(self, deployment: RulesDeployed) -> None:
        key = (deployment.version, deployment.effective_at)
        if key in self._seen:
            return
        self._seen.add(key)
        loaded = load(deployment.files)
        if loaded.rules is None:
            first = "; ".join(str(p) for p in loaded.problems[:3])
            log.error(
                "rule version %s does not compile here and is ignored (the previous version "
                "stays in force): %s",
                deployment.version,
                first,
            )
            return
        self.book.add(deployment.effective_at, loaded.rules)
        log.info(
            "rule version %s (%d rules) in force from %s%s",
            deployment.version,
            len(loaded.rules.rules),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(deployment.effective_at)),
            f" ({deployment.note})" if deployment.note else "",
        )
        passed = self._stream_time() if self._stream_time is not None else None
        if passed is not None and passed > deployment.effective_at:
            log.warning(
                "rule version %s arrived %.1f s after the stream passed its effective time: "
                "events in between were decided by the previous version (raise "
                "rules_activation_s if this repeats)",
                deployment.version,
                passed - deployment.effective_at,
            )

    def follow(self) -> threading.Thread:
        """Tail the control topic for new deployments in a background thread."""
        thread = threading.Thread(target=self._follow, name="rule-registry", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka,
                "group.id": f"pulse-rules-{uuid.uuid4().hex}",
                "enable.auto.commit": "false",
                "fetch.wait.max.ms": "100",
            }
        )
        try:
            topic = self.settings.control_topic
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self._stop.is_set():
                for msg in consumer.consume(100, 0.5):
                    if msg.error() is not None:
                        continue
                    deployment = parse(msg.value())
                    if deployment is not None and (
                        (deployment.version, deployment.effective_at) not in self._seen
                    ):
                        self.add(deployment)
                        self._publish()
        except (KafkaException, KeyError) as exc:
            log.error("rule registry stopped following %s: %s", self.settings.control_topic, exc)
        finally:
            consumer.close()

    def _publish(self) -> None:
        """Tell `pulse status` which version this process runs now."""
        versions = self.book.versions()
        start, latest = versions[-1]
        status = {
            "version": latest.version,
            "effective_at": start if start > float("-inf") else None,
            "rules": len(latest.rules),
            "versions_loaded": len(versions),
            "loaded_at": time.time(),
        }
        try:
            client: redis.Redis = redis.Redis.from_url(self.settings.redis, socket_timeout=2)
            client.set(RedisKeys(self.settings.redis_prefix).rules_status(), orjson.dumps(status))
            client.close()
        except redis.RedisError as exc:
            log.warning("could not publish the rule version to Redis: %s", exc)
