"""Rule-set deployments on the control topic: publish, read back, roll back.

A deployment carries every file's text, so each dataflow process compiles
exactly what was validated, and the topic itself is the history that
``pulse rules versions`` lists and ``pulse rules rollback`` returns to.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from collections.abc import Callable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from engine.control import RulesDeployed, decode_control, encode_control
from engine.rules.validate import rule_set_files, version_of
from pulse.settings import Settings

# Every deployment goes to one partition (same key), so they stay in order.
DEPLOY_KEY = b"rules"


class DeploymentError(RuntimeError):
    """Kafka refused or did not answer; the message says which and why."""


def new_deployment(
    files: Mapping[str, str], settings: Settings, now: float | None = None, note: str = ""
) -> RulesDeployed:
    """A deployment of these files, effective ``rules_activation_s`` from now."""
    now = time.time() if now is None else now
    named = rule_set_files(files)
    return RulesDeployed(
        version=version_of(named),
        effective_at=now + settings.rules_activation_s,
        deployed_at=now,
        files=named,
        deployed_by=f"{getpass.getuser()}@{socket.gethostname()}",
        note=note,
    )


def publish(settings: Settings, deployment: RulesDeployed, timeout_s: float = 15.0) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.kafka, "enable.idempotence": "true", "acks": "all"}
    )
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        producer.produce(
            settings.control_topic,
            key=DEPLOY_KEY,
            value=encode_control(deployment),
            on_delivery=delivered,
        )
        remaining = producer.flush(timeout_s)
    except (KafkaException, BufferError) as exc:
        raise DeploymentError(f"could not publish to {settings.control_topic}: {exc}") from exc
    if remaining or errors:
        reason = errors[0] if errors else f"no acknowledgement within {timeout_s:.0f} s"
        raise DeploymentError(f"could not publish to {settings.control_topic}: {reason}")


def read_deployments(
    settings: Settings,
    timeout_s: float = 10.0,
    on_message: Callable[[RulesDeployed], None] | None = None,
) -> list[RulesDeployed]:
    """Every deployment on the control topic so far, oldest first."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"pulse-rules-{uuid.uuid4().hex}",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
        }
    )
    found: list[RulesDeployed] = []
    try:
        metadata = consumer.list_topics(settings.control_topic, timeout=timeout_s)
        topic = metadata.topics.get(settings.control_topic)
        if topic is None or topic.error is not None:
            raise DeploymentError(
                f"topic {settings.control_topic} does not exist (`pulse services up` creates it)"
            )
        parts = [
            TopicPartition(settings.control_topic, p, OFFSET_BEGINNING) for p in topic.partitions
        ]
        ends = {}
        for tp in parts:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high > low:
                ends[tp.partition] = high
        if not ends:
            return found
        consumer.assign([tp for tp in parts if tp.partition in ends])
        deadline = time.monotonic() + timeout_s
        positions = {p: -1 for p in ends}
        while any(positions[p] + 1 < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise DeploymentError(f"reading {settings.control_topic} timed out")
            for msg in consumer.consume(500, 0.2):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is not None or partition is None or offset is None:
                    continue
                positions[partition] = offset
                deployment = parse(msg.value())
                if deployment is not None:
                    found.append(deployment)
                    if on_message is not None:
                        on_message(deployment)
    except KafkaException as exc:
        raise DeploymentError(f"reading {settings.control_topic}: {exc}") from exc
    finally:
        consumer.close()
    found.sort(key=lambda d: d.deployed_at)
    return found


def parse(raw: bytes | None) -> RulesDeployed | None:
    """A deployment record, or None for anything else on the control topic."""
    if not raw:
        return None
    try:
        message = decode_control(raw)
    except Exception:
        return None
    return message if isinstance(message, RulesDeployed) else None
