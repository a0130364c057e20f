"""Which Kafka errors the console's live rule set asks again on (api/console/rules.py)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from api.console.rules import _leader_moving


def test_a_moving_leader_is_asked_again_and_other_errors_are_not() -> None:
    for code in (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    ):
        assert _leader_moving(KafkaException(KafkaError(code))), code
    assert not _leader_moving(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
    assert not _leader_moving(KafkaException("no KafkaError inside"))
