"""The score models' step: one key learns every customer's labels, and its sink.

Customers' states produce labelled examples (engine/scores/labels.py, through
``Engine``); every one comes here, keyed ``scores``, so one set of models
learns from all customers, on any number of workers (a model per worker would
learn from a share and be lost or doubled when workers change). Labels are
few (one per customer and score per horizon), so one key has room to spare.

The models are published to Redis (``RedisKeys.model("scores")``) at most
every ``PUBLISH_EVERY_S`` of wall clock, and once more when the stream goes
quiet: the API scores customers with whatever was published last.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

import redis
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.metrics import FLOW_METRICS
from dataflows.redis_batch import write_all
from engine.scores.labels import Example, ScoreSettings
from engine.scores.serving import ScoreLearner, decode_published, encode_published
from pulse.keys import RedisKeys

MODEL_KEY = "scores"  # the step's one key, and the model's name in Redis
PUBLISH_EVERY_S = 1.0


class ScoreModelLogic(StatefulBatchLogic[list[Example], bytes, bytes]):
    """The models, learning each batch's examples in a fixed order (ScoreLearner)."""

    def __init__(self, settings: ScoreSettings, snapshot: bytes | None) -> None:
        published = decode_published(snapshot) if snapshot else None
        self._learner = ScoreLearner(settings, published)
        self._published_at = 0.0  # wall clock
        self._due = False  # learned since last published

    def on_batch(self, values: list[list[Example]]) -> tuple[Iterable[bytes], bool]:
        examples = [e for batch in values for e in batch]
        started = time.perf_counter()
        self._learner.learn(examples)
        FLOW_METRICS.models_updated(len(examples), time.perf_counter() - started)
        self._due = True
        if time.time() - self._published_at >= PUBLISH_EVERY_S:
            return [self._publish()], StatefulBatchLogic.RETAIN
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if not self._due:
            return None
        return datetime.fromtimestamp(self._published_at + PUBLISH_EVERY_S, tz=UTC)

    def on_notify(self) -> tuple[Iterable[bytes], bool]:
        if not self._due:
            return [], StatefulBatchLogic.RETAIN
        return [self._publish()], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[bytes], bool]:
        return self.on_notify()

    def _publish(self) -> bytes:
        self._due = False
        self._published_at = time.time()
        return encode_published(self._learner.published())

    def snapshot(self) -> bytes:
        return encode_published(self._learner.published())


class _ModelPartition(StatelessSinkPartition[tuple[str, bytes]]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys

    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
        latest: dict[str, bytes] = dict(items)  # the last of each model
        write_all(self._client, [("SET", self._keys.model(n), raw) for n, raw in latest.items()])

    def close(self) -> None:
        self._client.close()


class RedisModelSink(DynamicSink[tuple[str, bytes]]):
    """Published models: absolute values, so a replay overwrites."""

    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ModelPartition:
        return _ModelPartition(self._url, self._keys)
