"""Pure parts of the local Kafka runner."""

from __future__ import annotations

from pulse.services.kafka import _cluster_id


def test_kafka_cluster_ids_never_look_like_options() -> None:
    """The storage tool's parser took an id starting with '-' for an option (a CI failure)."""
    ids = [_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
