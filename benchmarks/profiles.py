"""Profile throughput: decode + state update + rules + Redis writes, per worker process.

For each size (number of customers) it produces a reproducible mix of shopper
events to a fresh 1-partition topic, runs the real dataflow (`pulse run`, one
process, one worker) and measures steady-state events/s from the dataflow's
own progress counters (start-up excluded), once with the shipped trigger rules
and once with none, side by side on the same events, so the cost of rules is a
ratio measured on one machine in one run. It then reads Redis memory per
profile (MEMORY USAGE over a sample of profile hashes) and profiles the pure
engine path in-process with cProfile, to show where the time goes.

    python -m benchmarks.profiles [--customers 10000,100000,1000000] [--events-per-customer 3]
                                  [--rules both|on|off]
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

from benchmarks.common import (
    bench_settings,
    print_table,
    rules_without_triggers,
    start,
    write_json,
)
from benchmarks.recovery import caught_up, end_offsets
from engine.customer import Engine
from engine.decode import decode_event
from engine.profile import CustomerState, profile_view
from engine.rules.ruleset import RuleSet
from pulse.keys import RedisKeys
from pulse.replay import replay
from pulse.rules_files import load_loyalty, load_rules
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
        elif roll < 0.98:
            event = {
                **base,
                "type": "identify",
                "traits": {"email": f"c{c}@example.com", "timezone": "Europe/Paris"},
            }
        else:
            event = {**base, "type": "consent_changed", "consent_channel": "email", "granted": True}
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


def engine_profile(events: list[bytes], rules: RuleSet | None) -> tuple[float, str]:
    """Events/s of decode + apply + one view per event, in-process, and the top costs."""
    engine = Engine(rules, loyalty=load_loyalty(load_settings().rules_dir))

    def run() -> None:
        states: dict[str, CustomerState] = {}
        for raw in events:
            event = decode_event(raw, 0.0)
            assert not hasattr(event, "reason")
            key = event.customer_key  # type: ignore[union-attr]
            state, _ = engine.apply(states.get(key), event)  # type: ignore[arg-type]
            states[key] = state
            profile_view(state)

    run()  # warm-up: first-use costs (CEL programs, zone data) out of the figure
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
    parser.add_argument(
        "--rules",
        choices=["both", "on", "off"],
        default="both",
        help="run with the shipped rules, without rules, or both side by side (default)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate the modes this many times and keep each one's best run "
        "(the machine is shared: interference only ever slows a run down)",
    )
    parser.add_argument(
        "--connectors",
        default="own",
        help="the flow's Kafka connectors, comma-separated to compare side by side "
        "in one run (stock,own)",
    )
    args = parser.parse_args()

    logs = Path(load_settings().cache_dir) / "bench"
    connectors = [c.strip() for c in args.connectors.split(",") if c.strip()]
    modes = [
        (rules, conn)
        for _ in range(args.rounds)
        for rules in (["off", "on"] if args.rules == "both" else [args.rules])
        for conn in connectors
    ]
    rules_dirs = {
        "on": load_settings().rules_dir,
        "off": str(rules_without_triggers(logs / "no-rules")),
    }
    rows, results = [], []
    best: list[tuple[int, float, float]] = []
    by_connectors: dict[tuple[int, str], float] = {}
    for customers in (int(c) for c in args.customers.split(",") if c):
        rates: dict[str, float] = {}
        for mode, conn in modes:
            settings = bench_settings(
                partitions=1, rules_dir=rules_dirs[mode], kafka_connectors=conn
            )
            n = produce(settings, synthetic_events(customers, args.events_per_customer))
            print(
                f"{customers:,} customers, rules {mode}, {conn} connectors: produced {n:,} events",
                flush=True,
            )
            log = logs / f"profiles-{customers}-{mode}-{conn}.log"
            flow = measure_dataflow(settings, n, log)
            memory = redis_memory(settings)
            if conn == connectors[-1]:
                rates[mode] = max(rates.get(mode, 0.0), flow["events_per_s"])
            if mode == "on" or args.rules != "both":
                key = (customers, conn)
                by_connectors[key] = max(by_connectors.get(key, 0.0), flow["events_per_s"])
            result = {
                "customers": customers,
                "rules": mode,
                "connectors": conn,
                "events": n,
                **flow,
                **memory,
            }
            results.append(result)
            rows.append(
                [
                    customers,
                    mode,
                    conn,
                    n,
                    flow["events_per_s"],
                    flow["seconds"],
                    memory["profile_bytes_mean"],
                ]
            )
            print(
                f"  {flow['events_per_s']:,.0f} events/s, "
                f"{memory['profile_bytes_mean']:,.0f} B per profile",
                flush=True,
            )
            _drop(settings)
        if "on" in rates and "off" in rates:
            best.append((customers, rates["off"], rates["on"]))

    sample = list(synthetic_events(10000, 10))
    shipped = load_rules(load_settings().rules_dir).rules
    engine_off, _ = engine_profile(sample, None)
    engine_on, top = engine_profile(sample, shipped)
    print_table(
        "profiles: one dataflow process, one worker, 1 partition, Redis on loopback",
        ["customers", "rules", "connectors", "events", "events/s", "seconds", "B/profile (mean)"],
        rows,
    )
    if len(connectors) > 1:
        first, last = connectors[0], connectors[-1]
        print_table(
            f"{last} against {first} connectors, best of {args.rounds} round(s) each",
            ["customers", f"{first} events/s", f"{last} events/s", f"{last}/{first}"],
            [
                [c, by_connectors[(c, first)], by_connectors[(c, last)],
                 f"{by_connectors[(c, last)] / by_connectors[(c, first)]:.2f}"]
                for c in sorted({c for c, _ in by_connectors})
            ],
        )  # fmt: skip
    if best:
        print_table(
            f"rules on against off, best of {args.rounds} round(s) each",
            ["customers", "off events/s", "on events/s", "on/off"],
            [[c, off, on, f"{on / off:.2f}"] for c, off, on in best],
        )
    print(
        "\nengine alone (decode + apply + view per event, in-process): "
        f"{engine_off:,.0f} events/s without rules, {engine_on:,.0f} with the shipped rules "
        f"({engine_on / engine_off:.2f})"
    )
    print("\nwhere the engine's time goes with rules (cProfile, top 10 by own time):")
    print("\n".join(top.splitlines()[:25]))
    path = write_json(
        "profiles",
        {
            "benchmark": "profiles",
            "sizes": results,
            "rules_on_off": [
                {"customers": c, "off": off, "on": on, "ratio": on / off} for c, off, on in best
            ],
            "engine_events_per_s": {"rules_off": engine_off, "rules_on": engine_on},
            "connectors_events_per_s": [
                {"customers": c, "connectors": conn, "events_per_s": rate}
                for (c, conn), rate in sorted(by_connectors.items())
            ],
        },
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
