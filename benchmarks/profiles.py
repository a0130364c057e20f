"""Profile throughput: decode + state update + rules + Redis writes, before and after.

For each size (number of customers) it produces a reproducible mix of shopper
events to a fresh topic per run (``--partitions``, 4 by default for every
process count, so 1 and 2 processes read the same layout), runs the real
dataflow (``pulse run --no-recovery``: one process with one worker, or a Bytewax
cluster of several on loopback) and measures steady-state events/s from the
dataflow's own progress counters (the per-worker ``processed`` counts, summed
over workers; start-up excluded).

In one run it measures, on the same events, every combination of

- the flow: today's (``--baseline REV``, default the tag ``before-batch-flow``,
  run from a worktree of that revision) and the working tree's ("new");
- processes (``--processes 1,2``);
- the shipped trigger rules on and off (``--rules``);
- the Kafka connectors (``--connectors``, own by default),

alternating them within each of ``--rounds`` rounds and keeping each one's
best run, and prints new against before, rules on against off and (with two
connectors) the connectors against each other. It then reads Redis memory per
profile (MEMORY USAGE over a sample of profile hashes) and profiles the working
tree's pure engine path in-process with cProfile, to show where the time goes.

    python -m benchmarks.profiles --customers 20000 --rules on     # about 2 minutes
    python -m benchmarks.profiles [--customers 10000,100000,1000000] [--events-per-customer 3]
        [--rules both|on|off] [--processes 1,2] [--partitions 4] [--rounds N]
        [--baseline before-batch-flow|REV|none] [--connectors own|stock|stock,own]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import redis

from benchmarks.common import (
    Flow,
    add_baseline_argument,
    bench_settings,
    drop_keys,
    flows,
    print_table,
    rules_without_triggers,
    start,
    stop,
    write_json,
)
from benchmarks.recovery import caught_up, cluster_args, end_offsets, read_position
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


def worker_counts(raw: dict[bytes, bytes]) -> dict[int, int]:
    """Events each worker has processed, from the ``workers`` hash (worker index ->
    JSON with ``processed``, dataflows/progress_sink.py)."""
    out = {}
    for field, value in raw.items():
        try:
            out[int(field)] = int(orjson.loads(value)["processed"])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            continue
    return out


def measure_dataflow(
    settings: Settings,
    events: int,
    log: Path,
    flow: Flow | None = None,
    processes: int = 1,
    stall_s: float = 90.0,
) -> dict[str, float]:
    """Run ``flow`` (the working tree by default) on ``processes`` until it has read
    the topic; events/s from when every worker first reported progress.

    The rate counts the events left at that moment (the sum of the workers'
    counters) over the time until the last one is read. Stops with an error when
    the read position has not moved for ``stall_s``.
    """
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    keys = RedisKeys(settings.redis_prefix)
    ends = end_offsets(settings)
    procs = []
    for i, args in enumerate(cluster_args(processes)):
        out = log if processes == 1 else log.with_suffix(f".p{i}.log")
        source = flow.source if flow else None
        procs.append(start(settings, *args, "--no-recovery", log=out, source=source))
    try:
        first: tuple[float, int] | None = None
        first_any: tuple[float, int] | None = None  # if a worker never reports
        moved, position = time.monotonic(), -1
        while not caught_up(settings, client, ends):
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"dataflow exited with {proc.returncode}; see {log}")
            counts = worker_counts(client.hgetall(keys.workers()))  # type: ignore[arg-type]
            if counts and first_any is None:
                first_any = (time.monotonic(), sum(counts.values()))
            if first is None and len(counts) >= processes * settings.workers:
                first = (time.monotonic(), sum(counts.values()))
            if (now := read_position(settings, client)) != position:
                moved, position = time.monotonic(), now
            elif time.monotonic() - moved > stall_s:
                raise RuntimeError(f"no progress for {stall_s:.0f} s; see {log}")
            time.sleep(0.05)
        done = time.monotonic()
        counted = sum(worker_counts(client.hgetall(keys.workers())).values())  # type: ignore[arg-type]
        first = first or first_any
        if first is None:
            raise RuntimeError(f"no worker reported progress; see {log}")
        if counted != events:
            print(f"  (the workers' counters say {counted:,} events, not {events:,})", flush=True)
        rate = (events - first[1]) / max(1e-9, done - first[0])
        return {"events_per_s": rate, "seconds": done - first[0], "counted": counted}
    finally:
        stop(*procs, timeout=30)


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
    parser.add_argument(
        "--customers", default="10000,100000,1000000", help="sizes, comma-separated"
    )
    parser.add_argument("--events-per-customer", type=int, default=3)
    parser.add_argument(
        "--rules",
        choices=["both", "on", "off"],
        default="both",
        help="run with the shipped rules, without rules, or both side by side (default)",
    )
    parser.add_argument(
        "--processes",
        default="1,2",
        help="dataflow processes (one worker each, a Bytewax cluster on loopback "
        "beyond one), comma-separated (default 1,2)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partitions of each run's fresh events topic, whatever the process count (default 4)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate the flows and modes this many times and keep each one's best "
        "run (the machine is shared: interference only ever slows a run down)",
    )
    parser.add_argument(
        "--connectors",
        default="own",
        help="the flow's Kafka connectors, comma-separated to compare side by side "
        "in one run (stock,own)",
    )
    add_baseline_argument(parser)
    args = parser.parse_args()

    logs = Path(load_settings().cache_dir) / "bench"
    runs = flows(args.baseline)
    connectors = [c.strip() for c in args.connectors.split(",") if c.strip()]
    process_counts = [int(p) for p in args.processes.split(",") if p.strip()]
    rule_modes = ["off", "on"] if args.rules == "both" else [args.rules]
    rules_dirs = {
        "on": load_settings().rules_dir,
        "off": str(rules_without_triggers(logs / "no-rules")),
    }
    rows, results = [], []
    # (customers, flow role, processes, rules, connectors) -> best events/s
    best: dict[tuple[int, str, int, str, str], float] = {}
    for customers in (int(c) for c in args.customers.split(",") if c):
        for _ in range(args.rounds):
            for processes in process_counts:
                for mode in rule_modes:
                    for conn in connectors:
                        for flow in runs:
                            settings = bench_settings(
                                partitions=args.partitions,
                                rules_dir=rules_dirs[mode],
                                kafka_connectors=conn,
                            )
                            n = produce(
                                settings, synthetic_events(customers, args.events_per_customer)
                            )
                            print(
                                f"{customers:,} customers, {flow.label}, {processes} "
                                f"process(es), rules {mode}, {conn} connectors: {n:,} events",
                                flush=True,
                            )
                            name = f"{customers}-{flow.role}-p{processes}-{mode}-{conn}"
                            result = _run(
                                settings, n, logs / f"profiles-{name}.log", flow, processes
                            )
                            key = (customers, flow.role, processes, mode, conn)
                            best[key] = max(best.get(key, 0.0), result["events_per_s"])
                            results.append(
                                {"customers": customers, "flow": flow.role, "sha": flow.sha,
                                 "processes": processes, "rules": mode, "connectors": conn,
                                 "events": n, **result}
                            )  # fmt: skip
                            rows.append(
                                [customers, flow.label, processes, mode, conn, n,
                                 result["events_per_s"], result["seconds"],
                                 result["profile_bytes_mean"]]
                            )  # fmt: skip

    sample = list(synthetic_events(10000, 10))
    shipped = load_rules(load_settings().rules_dir).rules
    engine_off, _ = engine_profile(sample, None)
    engine_on, top = engine_profile(sample, shipped)
    print()
    for flow in runs:
        print(flow.describe())
    print_table(
        f"profiles: dataflow processes of one worker each, {args.partitions} partitions, "
        "Redis on loopback",
        ["customers", "flow", "processes", "rules", "connectors", "events", "events/s",
         "seconds", "B/profile (mean)"],
        rows,
    )  # fmt: skip
    sizes = sorted({k[0] for k in best})
    combos = [(c, p, m, conn) for c in sizes for p in process_counts for m in rule_modes
              for conn in connectors]  # fmt: skip
    before_new = []
    if len(runs) == 2:
        before = runs[0]
        for c, p, m, conn in combos:
            old, new = best[(c, "before", p, m, conn)], best[(c, "new", p, m, conn)]
            before_new.append(
                {"customers": c, "processes": p, "rules": m, "connectors": conn,
                 "before": old, "new": new, "ratio": new / old}
            )  # fmt: skip
        print_table(
            f"before ({before.rev}, {before.sha[:10]}) vs new (working tree), events/s, "
            f"best of {args.rounds} round(s) each",
            ["customers", "processes", "rules", "connectors", "before events/s",
             "new events/s", "new/before"],
            [[r["customers"], r["processes"], r["rules"], r["connectors"], r["before"],
              r["new"], f"{r['ratio']:.2f}"] for r in before_new],
        )  # fmt: skip
    if len(connectors) > 1:
        first, last = connectors[0], connectors[-1]
        mode = "on" if args.rules == "both" else args.rules
        rows = []
        for flow in runs:
            for c in sizes:
                for p in process_counts:
                    a, b = best[(c, flow.role, p, mode, first)], best[(c, flow.role, p, mode, last)]
                    rows.append([c, flow.label, p, a, b, f"{b / a:.2f}"])
        print_table(
            f"{last} against {first} connectors (rules {mode}), best of {args.rounds} "
            "round(s) each",
            ["customers", "flow", "processes", f"{first} events/s", f"{last} events/s",
             f"{last}/{first}"],
            rows,
        )  # fmt: skip
    on_off = []
    if args.rules == "both":
        conn = connectors[-1]
        for flow in runs:
            for c in sizes:
                for p in process_counts:
                    off, on = (
                        best[(c, flow.role, p, "off", conn)],
                        best[(c, flow.role, p, "on", conn)],
                    )
                    on_off.append(
                        {"customers": c, "flow": flow.role, "processes": p, "off": off,
                         "on": on, "ratio": on / off}
                    )  # fmt: skip
        print_table(
            f"rules on against off ({conn} connectors), best of {args.rounds} round(s) each",
            ["customers", "flow", "processes", "off events/s", "on events/s", "on/off"],
            [[r["customers"], r["flow"], r["processes"], r["off"], r["on"],
              f"{r['ratio']:.2f}"] for r in on_off],
        )  # fmt: skip
    print(
        "\nengine alone (the working tree's decode + apply + view per event, in-process): "
        f"{engine_off:,.0f} events/s without rules, {engine_on:,.0f} with the shipped rules "
        f"({engine_on / engine_off:.2f})"
    )
    print("\nwhere the engine's time goes with rules (cProfile, top 10 by own time):")
    print("\n".join(top.splitlines()[:25]))
    path = write_json(
        "profiles",
        {
            "benchmark": "profiles",
            "flows": [flow.as_json() for flow in runs],
            "partitions": args.partitions,
            "rounds": args.rounds,
            "sizes": results,
            "before_vs_new": before_new,
            "rules_on_off": on_off,
            "engine_events_per_s": {"rules_off": engine_off, "rules_on": engine_on},
            "connectors_events_per_s": [
                {"customers": c, "flow": role, "processes": p, "rules": m, "connectors": conn,
                 "events_per_s": rate}
                for (c, role, p, m, conn), rate in sorted(best.items())
            ],
        },
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


def _run(
    settings: Settings, events: int, log: Path, flow: Flow, processes: int
) -> dict[str, float]:
    """One measured run and the Redis memory it left, then its keys freed."""
    result = measure_dataflow(settings, events, log, flow, processes)
    result.update(redis_memory(settings))
    print(
        f"  {result['events_per_s']:,.0f} events/s, "
        f"{result['profile_bytes_mean']:,.0f} B per profile",
        flush=True,
    )
    _drop(settings)
    return result


def _drop(settings: Settings) -> None:
    """Free the benchmark's Redis keys so the next size measures alone."""
    drop_keys(settings)


if __name__ == "__main__":
    raise SystemExit(main())
