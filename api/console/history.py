"""The last hour of pipeline samples, for "in the last hour" and the charts.

The dataflow keeps each rule's totals (absolute values, replay-safe), not a
time series. The console samples the totals every ``INTERVAL_S`` into one
Redis sorted set and answers "in the last hour" as today's totals less the
oldest sample of the hour. One API process writes each slot (SET NX on the
slot), so several API processes do not multiply the samples. Until an hour
has been sampled the page says since when it counts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from pulse.keys import RedisKeys

log = logging.getLogger(__name__)

INTERVAL_S = 10.0
KEEP_S = 3600.0


def record(client: redis.Redis, keys: RedisKeys, sample: dict[str, Any]) -> bool:
    """Keep this sample unless another process has this slot; drop the old ones."""
    t = float(sample["t"])
    slot = int(t // INTERVAL_S)
    if not client.set(keys.console_slot(slot), b"1", nx=True, ex=int(INTERVAL_S * 3)):
        return False
    pipe = client.pipeline(transaction=False)
    pipe.zadd(keys.console_samples(), {orjson.dumps(sample): t})
    pipe.zremrangebyscore(keys.console_samples(), "-inf", t - KEEP_S)
    pipe.execute()
    return True


def samples(client: redis.Redis, keys: RedisKeys, since: float) -> list[dict[str, Any]]:
    """Samples from ``since`` on, oldest first."""
    raw: list[bytes] = client.zrangebyscore(keys.console_samples(), since, "+inf")  # type: ignore[assignment]
    return [orjson.loads(member) for member in raw]


@dataclass
class HourCounts:
    """Decisions per rule since ``since`` (an hour ago, or the oldest sample)."""

    since: float | None
    fired: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> reason -> n


def last_hour(now_stats: dict[str, dict[str, int]], history: list[dict[str, Any]]) -> HourCounts:
    """Today's totals less the oldest sample; a total that went down (state
    reset) counts from zero."""
    if not history:
        return HourCounts(since=None)
    base: dict[str, dict[str, int]] = history[0].get("rules", {})
    counts = HourCounts(since=float(history[0]["t"]))
    for rule_id, totals in now_stats.items():
        before = base.get(rule_id, {})

        def grew(
            name: str, totals: dict[str, int] = totals, before: dict[str, int] = before
        ) -> int:
            now, then = totals.get(name, 0), before.get(name, 0)
            return now - then if now >= then else now

        counts.fired[rule_id] = grew("fired")
        reasons = {
            name.split(":", 1)[1]: grew(name) for name in totals if name.startswith("suppressed:")
        }
        counts.suppressed[rule_id] = {k: v for k, v in reasons.items() if v}
    return counts


def series(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-interval rates for the charts: events in and processed per second,
    fires per rule per minute."""
    times: list[float] = []
    events_in: list[float] = []
    processed: list[float] = []
    fires: dict[str, list[float]] = {}
    rules = sorted({r for s in history for r in s.get("rules", {})})
    for before, after in itertools.pairwise(history):
        dt = float(after["t"]) - float(before["t"])
        if dt <= 0:
            continue
        times.append(float(after["t"]))
        events_in.append(max(0, after["in"] - before["in"]) / dt)
        processed.append(max(0, after["processed"] - before["processed"]) / dt)
        for rule_id in rules:
            now = after.get("rules", {}).get(rule_id, {}).get("fired", 0)
            then = before.get("rules", {}).get(rule_id, {}).get("fired", 0)
            fires.setdefault(rule_id, []).append(max(0, now - then) * 60.0 / dt)
    return {"t": times, "in": events_in, "processed": processed, "fires": fires}


async def sample_forever(take: Callable[[], bool], interval_s: float = INTERVAL_S) -> None:
    """The API's background sampler: ``take`` (blocking) every interval, in a
    thread; the first one an interval after start-up, so a short-lived app
    (a test, a crash loop) does not pay for it."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(take)
        except Exception as exc:  # a dashboard sample must never take the API down
            log.warning("console sample failed: %s", exc)
