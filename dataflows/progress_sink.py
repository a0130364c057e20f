"""Publishes the dataflow's progress to Redis for `pulse status`.

Per input partition, the next offset the flow will read (so lag = high
watermark - this), and per worker, the events processed since it started and
when it last wrote. Absolute values, one small pipeline per batch.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.metrics import FLOW_METRICS
from pulse.keys import RedisKeys


class Progress(Protocol):
    """What a batch read (dataflows/batches.py: Routed)."""

    read: int  # records
    positions: dict[str, int]  # "topic:partition" -> next offset to read


LOG_EVERY_S = 10.0
log = logging.getLogger(__name__)


class _ProgressPartition(StatelessSinkPartition[Progress]):
    def __init__(self, url: str, keys: RedisKeys, worker_index: int) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys
        self._worker = worker_index
        self._processed = 0
        self._started = time.time()
        self._logged_at = time.monotonic()
        self._logged_count = 0

    def write_batch(self, items: list[Progress]) -> None:
        offsets: dict[str, int] = {}
        before = self._processed
        for batch in items:
            self._processed += batch.read
            for field, offset in batch.positions.items():
                offsets[field] = max(offsets.get(field, -1), offset)
        FLOW_METRICS.read(self._worker, self._processed - before, offsets)
        status = {"processed": self._processed, "started_at": self._started, "at": time.time()}
        pipe = self._client.pipeline(transaction=False)
        if offsets:
            pipe.hset(self._keys.progress(), mapping=offsets)  # type: ignore[arg-type]
        pipe.hset(self._keys.workers(), str(self._worker), orjson.dumps(status))
        pipe.execute()
        elapsed = time.monotonic() - self._logged_at
        if elapsed >= LOG_EVERY_S:
            rate = (self._processed - self._logged_count) / elapsed
            log.info(
                "worker %d: %d events read, %.0f events/s", self._worker, self._processed, rate
            )
            self._logged_at, self._logged_count = time.monotonic(), self._processed

    def close(self) -> None:
        self._client.close()


class RedisProgressSink(DynamicSink[Progress]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        return _ProgressPartition(self._url, self._keys, worker_index)
