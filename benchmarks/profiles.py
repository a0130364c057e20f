"""Profile throughput: decode + state update + Redis writes, per worker process.

For each size (number of customers) it produces a reproducible mix of shopper
events to a fresh 1-partition topic, runs the real dataflow (`pulse run`, one
process, one worker) and measures steady-state events/s from the dataflow's
own progress counters (start-up excluded). It then reads Redis memory per
profile (MEMORY USAGE over a sample of profile hashes) and profiles the pure
engine path in-process with cProfile, to show where the time goes.

    python -m benchmarks.profiles [--customers 10000,100000,1000000] [--events-per-customer 3]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import redis

from benchmarks.common import bench_settings, print_table, start, write_json
from benchmarks.recovery import caught_up, end_offsets
from engine.customer import Engine
from engine.decode import decode_event
from engine.profile import CustomerState, profile_view
from engine.triggers import abandoned_cart
from pulse.keys import RedisKeys
from pulse.replay import replay
from pulse.settings import Settings, load_settings

T0 = 1_767_600_000.0  # 2026-01-05
CATEGORIES = ("mugs", "candles", "kitchen", "garden", "toys", "stationery", "lighting", "bags")


def synthetic_events(customers: int, per_customer: int, seed: int = 5) -> Iterator[bytes]:
    """A realistic mix (views, carts, orders, identifies) spread over ``customers``.

    Cheaper to generate than the demo's session simulator, so a million
    customers fit in memory and time.
    """
    rng = random.Random(seed)
    total = customers * per_customer
    for i in range(total):
        c = rng.randrange(customers)
        ts = T0 + i * 0.01
        roll = rng.random()
        base: dict[str, Any] = {"event_id": f"p{i}", "customer_id": f"c{c}", "timestamp": _iso(ts)}
        sku = f"SKU-{rng.randrange(3000)}"
        category = CATEGORIES[hash(sku) % len(CATEGORIES)]
        if roll < 0.55:
            event = {
                **base,
                "type": "product_view",
                "sku": sku,
                "category": category,
                "price": 4.95,
            }
        elif roll < 0.75:
            event = {**base, "type": "page_view", "url": "https://shop.example/"}
        elif roll < 0.88:
            event = {
                **base,
                "type": "add_to_cart",
                "sku": sku,
                "category": category,
                "price": 4.95,
                "quantity": 1,
            }
        elif roll < 0.95:
            event = {
                **base,
                "type": "order_placed",
                "order_id": f"o{i}",
                "total": 24.5,
                "items": [{"sku": sku, "price": 24.5, "category": category}],
            }
        else:
            event = {
                **base,
                "type": "identify",
                "traits": {"email": f"c{c}@example.com", "timezone": "Europe/Paris"},
            }
        yield orjson.dumps(event)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def produce(settings: Settings, events: Iterator[bytes]) -> int:
    report = replay(settings, events, rate=None)
    assert report.sent == report.read and not report.failures, report
    return report.sent


def measure_dataflow(settings: Settings, events: int, log: Path) -> dict[str, float]:
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    keys = RedisKeys(settings.redis_prefix)
    ends = end_offsets(settings)
    proc = start(settings, "run", "--no-recovery", log=log)
    try:
        first: tuple[float, int] | None = None
        while not caught_up(settings, client, ends):
            if proc.poll() is not None:
                raise RuntimeError(f"dataflow exited with {proc.returncode}; see {log}")
            raw = client.hget(keys.workers(), "0")
            if raw and first is None:
                first = (time.monotonic(), orjson.loads(raw)["processed"])
            time.sleep(0.05)
        done = time.monotonic()
        assert first is not None, "no progress seen"
        rate = (events - first[1]) / max(1e-9, done - first[0])
        return {"events_per_s": rate, "seconds": done - first[0]}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def redis_memory(settings: Settings, sample: int = 500) -> dict[str, float]:
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    pattern = f"{settings.redis_prefix}:{{*}}:profile"
    sizes = []
    for key in client.scan_iter(match=pattern, count=1000):
        sizes.append(int(client.memory_usage(key) or 0))  # type: ignore[arg-type]
        if len(sizes) >= sample:
            break
    sizes.sort()
    return {
        "profile_bytes_mean": sum(sizes) / len(sizes) if sizes else 0.0,
        "profile_bytes_p50": float(sizes[len(sizes) // 2]) if sizes else 0.0,
        "profile_bytes_max": float(sizes[-1]) if sizes else 0.0,
    }


def engine_profile(events: list[bytes]) -> tuple[float, str]:
    """Events/s of decode + apply + one view per event, in-process, and the top costs."""
    engine = Engine([abandoned_cart(1800.0)])

    def run() -> None:
        states: dict[str, CustomerState] = {}
        for raw in events:
            event = decode_event(raw, 0.0)
            assert not hasattr(event, "reason")
            key = event.customer_key  # type: ignore[union-attr]
            state, _ = engine.apply(states.get(key), event, event.ts)  # type: ignore[arg-type]
            states[key] = state
            profile_view(state)

    started = time.perf_counter()
    run()
    rate = len(events) / (time.perf_counter() - started)
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(10)
    return rate, out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", default="10000,100000,1000000")
    parser.add_argument("--events-per-customer", type=int, default=3)
    args = parser.parse_args()

    logs = Path(load_settings().cache_dir) / "bench"
    rows, results = [], []
    for customers in (int(c) for c in args.customers.split(",") if c):
        settings = bench_settings(partitions=1)
        n = produce(settings, synthetic_events(customers, args.events_per_customer))
        print(f"{customers:,} customers: produced {n:,} events", flush=True)
        flow = measure_dataflow(settings, n, logs / f"profiles-{customers}.log")
        memory = redis_memory(settings)
        result = {"customers": customers, "events": n, **flow, **memory}
        results.append(result)
        rows.append(
            [
                customers,
                n,
                flow["events_per_s"],
                flow["seconds"],
                memory["profile_bytes_mean"],
                memory["profile_bytes_p50"],
            ]
        )
        print(
            f"  {flow['events_per_s']:,.0f} events/s, "
            f"{memory['profile_bytes_mean']:,.0f} B per profile",
            flush=True,
        )
        _drop(settings)

    sample = list(synthetic_events(10000, 10))
    engine_rate, top = engine_profile(sample)
    print_table(
        "profiles: one dataflow process, one worker, 1 partition, Redis on loopback",
        ["customers", "events", "events/s", "seconds", "B/profile (mean)", "B/profile (p50)"],
        rows,
    )
    print(
        f"\nengine alone (decode + apply + view per event, in-process): {engine_rate:,.0f} events/s"
    )
    print("\nwhere the engine's time goes (cProfile, top 10 by own time):")
    print("\n".join(top.splitlines()[:25]))
    path = write_json(
        "profiles", {"benchmark": "profiles", "sizes": results, "engine_events_per_s": engine_rate}
    )
    print(f"wrote {path}")
    return 0


def _drop(settings: Settings) -> None:
    """Free the benchmark's Redis keys so the next size measures alone."""
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    batch = []
    for key in client.scan_iter(match=f"{settings.redis_prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.delete(*batch)
            batch = []
    if batch:
        client.delete(*batch)


if __name__ == "__main__":
    raise SystemExit(main())
