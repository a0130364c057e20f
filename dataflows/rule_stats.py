"""Decision counts per rule, kept as dataflow state and written to Redis absolutely.

Counting in Redis with HINCRBY would count a replayed decision twice after a
crash; counting in recovered state and writing the totals cannot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from engine.triggers import Decision
from pulse.keys import RedisKeys

RuleCounts = tuple[str, dict[str, int]]  # rule id, counter -> count


def counter(decision: Decision) -> str:
    """``fired``, ``suppressed:no_consent``, ``exited:condition``, ``converted:holdout``..."""
    if decision.outcome == "error" or not decision.reason:
        return decision.outcome  # its reason is an expression and a message: not a key
    reason = decision.reason.split(":", 1)[0] if decision.outcome == "exited" else decision.reason
    return f"{decision.outcome}:{reason}"


class RuleCountsLogic(StatefulBatchLogic[Decision, dict[str, int], dict[str, int]]):
    """One rule's totals; answers a batch of its decisions with the new totals."""

    def __init__(self, snapshot: dict[str, int] | None) -> None:
        self._counts = dict(snapshot or {})

    def on_batch(self, values: list[Decision]) -> tuple[Iterable[dict[str, int]], bool]:
        counts = self._counts
        for decision in values:
            for name in {decision.outcome, counter(decision)}:
                counts[name] = counts.get(name, 0) + 1
        return [dict(counts)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


class _StatsPartition(StatelessSinkPartition[RuleCounts]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._client: redis.Redis = redis.Redis.from_url(url)
        self._keys = keys

    def write_batch(self, items: list[RuleCounts]) -> None:
        latest = dict(items)  # the last totals per rule in the batch
        pipe = self._client.pipeline(transaction=False)
        for rule_id, counts in latest.items():
            pipe.hset(self._keys.rule_stats(rule_id), mapping=counts)  # type: ignore[arg-type]
        pipe.execute()

    def close(self) -> None:
        self._client.close()


class RedisRuleStatsSink(DynamicSink[RuleCounts]):
    def __init__(self, url: str, keys: RedisKeys) -> None:
        self._url = url
        self._keys = keys

    def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
        return _StatsPartition(self._url, self._keys)
