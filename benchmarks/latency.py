"""Event to delivery: how long from an event produced to Kafka until the webhook arrives.

Every process runs on this machine, as in production on one host: Kafka and
Redis (``pulse services``), the dataflow (``pulse run``), one dispatcher
(``pulse dispatch``, routed, webhooks to a receiver in this process) and an
open-loop load generator in a process of its own (it sends on a fixed
schedule, whatever the flow's pace, and latency is measured from each event's
*scheduled* time, so a stalled flow cannot hide its stall by slowing the
load down).

The load is mostly background traffic (page and product views of a pool of
shoppers: profiles to update, no trigger) with latency probes mixed in at a
fixed rate: an order, which fires a webhook rule at once (a CRM sync of the
order and the tier it brings), and (``--delayed``) an add to cart whose webhook
rule waits two seconds, to see how late delayed rules fire after they are due.
Probes are timed at three points: scheduled, trigger record seen on
``<prefix>.triggers`` (a consumer in this process), webhook request received.
So the budget splits into the flow's hop (event to trigger record, Kafka
both ways included) and the dispatcher's (trigger record to webhook); a copy
of each probe sent to a topic only this benchmark reads gives Kafka's own
share (produce to consume, one way) under the same load.

Every configuration (rate, recovery, connectors) runs twice in a row, on
fresh topics each time: with Pulse as of ``--baseline REV`` (default the tag
``before-batch-flow``, today's flow, its dataflow and dispatcher run from a
worktree of that revision) and with the working tree's ("new"), and the
event-to-trigger latencies (the flow's hop) of the two are printed side by side
with their ratios, so a gain in throughput is not bought with latency. The
flow's CPU is sampled while it is idle before the load starts.

    python -m benchmarks.latency --rates 1000      # before and new, recovery on and off: ~4 min
    python -m benchmarks.latency                   # the same at 1,000 and 5,000 events/s
    python -m benchmarks.latency --connectors stock,own --baseline none   # connectors compared
    python -m benchmarks.latency --rates 1000 --recovery on --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from benchmarks.common import (
    Flow,
    add_baseline_argument,
    bench_settings,
    flows,
    percentile,
    print_table,
    rules_without_triggers,
    write_json,
)
from benchmarks.common import stop as stop_processes
from pulse.settings import Settings, load_settings

ORDER_RULE = """\
id: bench_order_sync
description: Benchmark probe, fires at once - an order (and its tier) to the CRM webhook.
category: transactional
priority: 55
trigger:
  event: order_placed
action:
  channel: webhook
  template: bench-order
  payload:
    tier: profile.tier
"""

DELAYED_RULE = """\
id: bench_cart_reminder
description: Benchmark probe, fires two seconds after an add to cart.
category: transactional
priority: 50
trigger:
  event: add_to_cart
wait:
  for: 2s
action:
  channel: webhook
  template: bench-cart
"""

DELAY_S = 2.0
WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


# ---------------------------------------------------------------- load generator


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def generate(args: argparse.Namespace) -> int:
    """The load process: sends ``rate`` events/s from ``start`` for ``seconds``,
    a probe every ``1 / probe_rate`` s; never spins (sleeps to the next due time)."""
    producer = Producer(
        {
            "bootstrap.servers": args.kafka,
            "linger.ms": "0",
            "acks": "all",
            "enable.idempotence": "true",
        }
    )
    rng = random.Random(7)
    n = int(args.rate * args.seconds)
    every = max(1, round(args.rate / args.probe_rate))
    pool = [f"shopper-{i}" for i in range(args.pool)]
    started = args.start
    for i in range(n):
        due = started + i / args.rate
        now = time.time()
        if due > now:
            time.sleep(due - now)
        producer.poll(0)
        if i % every == 0:
            k = i // every
            delayed = args.delayed and k % 2 == 1
            customer = f"{args.tag}-{'cart' if delayed else 'order'}-{k}"
            if delayed:
                event: dict[str, Any] = {
                    "type": "add_to_cart",
                    "event_id": f"{args.tag}-p{k}",
                    "customer_id": customer,
                    "timestamp": _iso(due),
                    "sku": "SKU-PROBE",
                    "price": 10.0,
                }
            else:
                event = {
                    "type": "order_placed",
                    "event_id": f"{args.tag}-p{k}",
                    "customer_id": customer,
                    "timestamp": _iso(due),
                    "order_id": f"{args.tag}-o{k}",
                    "total": 300.0,
                    "items": [{"sku": "SKU-PROBE", "price": 300.0}],
                }
            # The probe's schedule travels with it, for the receiving end; a
            # copy goes to a topic only this benchmark reads: Kafka's own share.
            print(json.dumps([customer, due, "cart" if delayed else "order"]), flush=False)
            producer.produce(args.mirror, b"", customer.encode())
        else:
            customer = rng.choice(pool)
            if rng.random() < 0.5:
                event = {"type": "page_view", "url": f"/p/{rng.randrange(500)}"}
            else:
                sku = rng.randrange(2000)
                event = {
                    "type": "product_view",
                    "sku": f"SKU-{sku}",
                    "category": f"cat-{sku % 20}",
                    "price": float(5 + sku % 100),
                }
            event.update(event_id=f"{args.tag}-b{i}", customer_id=customer, timestamp=_iso(due))
        producer.produce(args.topic, orjson.dumps(event), customer.encode())
    producer.flush(30)
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------- receiving end


class Arrivals:
    """When each probe's trigger record and webhook arrived (wall clock)."""

    def __init__(self) -> None:
        self.webhook: dict[str, float] = {}
        self.trigger: dict[str, float] = {}
        self.mirror: dict[str, float] = {}
        self.lock = threading.Lock()


def webhook_server(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = time.time()
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(204)
            self.end_headers()
            try:
                customer = orjson.loads(body)["data"]["customer_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return
            with arrivals.lock:
                arrivals.webhook.setdefault(customer, at)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def watch_triggers(
    settings: Settings, mirror: str, arrivals: Arrivals, stop: threading.Event
) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"{settings.topic_prefix}.bench-watch",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    # A topic the broker does not list yet at subscription is not looked for
    # again for minutes (librdkafka's metadata refresh): the mirror was only just
    # created, so wait until it is listed.
    deadline = time.time() + 10
    while time.time() < deadline:
        listed = consumer.list_topics(mirror, timeout=5).topics.get(mirror)
        if listed is not None and listed.error is None and listed.partitions:
            break
        time.sleep(0.1)
    consumer.subscribe([settings.triggers_topic, mirror])
    while not stop.is_set():
        msg = consumer.poll(0.1)
        if msg is None or msg.error() is not None:
            continue
        at = time.time()
        key = (msg.key() or b"").decode()
        seen = arrivals.mirror if msg.topic() == mirror else arrivals.trigger
        with arrivals.lock:
            seen.setdefault(key, at)
    consumer.close()


# ---------------------------------------------------------------- one configuration


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_one(
    flow: Flow,
    connectors: str,
    rate: int,
    recovery: bool,
    args: argparse.Namespace,
    rules_dir: Path,
    logs: Path,
) -> dict[str, Any]:
    arrivals = Arrivals()
    server = webhook_server(arrivals)
    settings = bench_settings(
        partitions=args.partitions,
        rules_dir=str(rules_dir),
        kafka_connectors=connectors,
        dispatch_channel="routed",
        webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook",
        webhook_secret=WEBHOOK_SECRET,
        event_lateness_s=args.lateness,
        snapshot_interval_s=args.snapshot_interval,
        start_from="earliest",
    )
    name = f"{flow.role}-{connectors}-{rate}-{'recovery' if recovery else 'norecovery'}"
    mirror = f"{settings.topic_prefix}.bench-mirror"
    admin = AdminClient({"bootstrap.servers": settings.kafka})
    admin.create_topics([NewTopic(mirror, num_partitions=1, replication_factor=1)])[mirror].result()
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_triggers, args=(settings, mirror, arrivals, stop), daemon=True
    )
    watcher.start()
    run_args = ["run"] if recovery else ["run", "--no-recovery"]
    dataflow = flow.start(settings, *run_args, log=logs / f"latency-{name}-run.log")
    dispatcher = flow.start(settings, "dispatch", log=logs / f"latency-{name}-dispatch.log")
    try:
        _warm_up(settings, arrivals, dataflow, dispatcher)
        idle = _idle_cpu(dataflow.pid, args.idle_seconds)
        tag = f"{settings.topic_prefix}r{rate}"
        begin = time.time() + 1.0
        gen = subprocess.run(
            [
                sys.executable, "-m", "benchmarks.latency", "_generate",
                "--kafka", settings.kafka, "--topic", settings.events_topic,
                "--rate", str(rate), "--seconds", str(args.seconds),
                "--probe-rate", str(args.probe_rate), "--start", repr(begin),
                "--tag", tag, "--pool", str(args.pool), "--mirror", mirror,
                *(["--delayed"] if args.delayed else []),
            ],
            capture_output=True, check=True, text=True,
        )  # fmt: skip
        probes = [json.loads(line) for line in gen.stdout.splitlines() if line.startswith("[")]
        sent_late = time.time() - (begin + args.seconds)
        deadline = time.time() + 15 + DELAY_S + args.lateness
        while time.time() < deadline:
            with arrivals.lock:
                if all(p[0] in arrivals.webhook for p in probes):
                    break
            time.sleep(0.2)
        summary = _summary(connectors, rate, probes, arrivals, idle, sent_late, args)
        return {"flow": flow.role, "sha": flow.sha, **summary, "recovery": recovery}
    finally:
        stop.set()
        stop_processes(dispatcher, dataflow, timeout=20)
        server.shutdown()
        shutil.rmtree(settings.effective_recovery_dir, ignore_errors=True)


def _warm_up(settings: Settings, arrivals: Arrivals, *procs: subprocess.Popen[bytes]) -> None:
    """Until one probe goes all the way through (the flow and dispatcher are up)."""
    producer = Producer({"bootstrap.servers": settings.kafka})
    deadline = time.time() + 90
    k = 0
    while time.time() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a benchmark process exited with {proc.returncode}")
        customer = f"warm-{k}"
        event = {
            "type": "order_placed",
            "event_id": f"warm-{settings.topic_prefix}-{k}",
            "customer_id": customer,
            "timestamp": _iso(time.time()),
            "order_id": f"warm-{k}",
            "total": 300.0,
            "items": [{"sku": "SKU-WARM", "price": 300.0}],
        }
        producer.produce(settings.events_topic, orjson.dumps(event), customer.encode())
        producer.flush(5)
        k += 1
        for _ in range(20):
            time.sleep(0.1)
            with arrivals.lock:
                if any(c.startswith("warm-") for c in arrivals.webhook):
                    time.sleep(2.0)  # let the start-up settle
                    return
    raise RuntimeError("no warm-up webhook within 90 s: see the logs in .cache/bench")


def _idle_cpu(pid: int, seconds: float) -> float:
    """Share of one core the flow used while no event arrived."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def _summary(
    connectors: str,
    rate: int,
    probes: list[list[Any]],
    arrivals: Arrivals,
    idle: float,
    sent_late: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    total, flow_hop, dispatch_hop, late, kafka = [], [], [], [], []
    timeline: list[tuple[float, str, float]] = []  # (s after the first probe, kind, ms)
    missing = 0
    skip_until = probes[0][1] + args.skip_s if probes else 0.0
    with arrivals.lock:
        for customer, due, kind in probes:
            hook = arrivals.webhook.get(customer)
            trig = arrivals.trigger.get(customer)
            if hook is None:
                missing += 1
                continue
            if due < skip_until:
                continue  # the ramp: measured, not counted (--skip-s)
            if kind == "cart":
                late.append((hook - (due + DELAY_S)) * 1000)
                timeline.append((round(due - probes[0][1], 3), "late", round(late[-1], 2)))
                continue
            timeline.append((round(due - probes[0][1], 3), "total", round((hook - due) * 1000, 2)))
            if (mirrored := arrivals.mirror.get(customer)) is not None:
                kafka.append((mirrored - due) * 1000)
            total.append((hook - due) * 1000)
            if trig is not None:
                flow_hop.append((trig - due) * 1000)
                dispatch_hop.append((hook - trig) * 1000)
    for values in (total, flow_hop, dispatch_hop, late, kafka):
        values.sort()

    def q(values: list[float]) -> dict[str, float]:
        return {
            "p50": percentile(values, 0.5),
            "p99": percentile(values, 0.99),
            "p999": percentile(values, 0.999),
            "max": values[-1] if values else float("nan"),
        }

    return {
        "connectors": connectors,
        "rate": rate,
        "seconds": args.seconds,
        "skipped_s": args.skip_s,
        "snapshot_interval_s": args.snapshot_interval,
        "probes": len(probes),
        "missing": missing,
        "event_to_webhook_ms": q(total),
        "event_to_trigger_ms": q(flow_hop),
        "trigger_to_webhook_ms": q(dispatch_hop),
        "delayed_late_ms": q(late),
        "kafka_alone_ms": q(kafka),
        "idle_cpu_core_share": idle,
        "generator_behind_s": sent_late,
        "timeline": timeline,
    }


# ---------------------------------------------------------------- main


def bench_rules(path: Path, delayed: bool) -> Path:
    rules_without_triggers(path)
    (path / "bench_order_sync.yaml").write_text(ORDER_RULE)
    if delayed:
        (path / "bench_cart_reminder.yaml").write_text(DELAYED_RULE)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_generate":
        g = argparse.ArgumentParser()
        for flag, kind in (
            ("--kafka", str), ("--topic", str), ("--rate", float), ("--seconds", float),
            ("--probe-rate", float), ("--start", float), ("--tag", str), ("--pool", int),
            ("--mirror", str),
        ):  # fmt: skip
            g.add_argument(flag, type=kind, required=True)
        g.add_argument("--delayed", action="store_true")
        return generate(g.parse_args(argv[1:]))

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--connectors",
        default="own",
        help="the flow's Kafka connectors, comma-separated to compare side by side: "
        "stock, own (default own)",
    )
    parser.add_argument("--rates", default="1000,5000", help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="load per configuration")
    parser.add_argument("--probe-rate", type=float, default=50.0, help="probes per second")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--snapshot-interval",
        type=float,
        default=load_settings().snapshot_interval_s,
        help="the flow's snapshot_interval_s (default: the configured one); every epoch "
        "end holds the input while the state changed in the epoch is snapshotted",
    )
    parser.add_argument("--pool", type=int, default=20000, help="background shoppers")
    parser.add_argument(
        "--lateness",
        type=float,
        default=0.0,
        help="event_lateness_s for the flow: delayed rules fire this much after due by design",
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--recovery",
        choices=["both", "on", "off"],
        default="both",
        help="the flow with recovery snapshots (as in production), without, or both "
        "side by side (default): each epoch end holds the input while the state changed "
        "in the epoch is written",
    )
    parser.add_argument(
        "--skip-s",
        type=float,
        default=2.0,
        help="probes of the first seconds of each load are not counted (the ramp: "
        "a stream of new shoppers, cold caches); they must still arrive",
    )
    parser.add_argument(
        "--no-delayed", dest="delayed", action="store_false", help="skip the delayed-rule probes"
    )
    add_baseline_argument(parser)
    args = parser.parse_args(argv)

    logs = Path(load_settings().cache_dir) / "bench"
    runs = flows(args.baseline)
    rules_dir = bench_rules(Path(tempfile.mkdtemp(prefix="pulse-latency-rules-")), args.delayed)
    results = []
    recoveries = {"both": [True, False], "on": [True], "off": [False]}[args.recovery]
    configs = [
        (rate, recovery, connectors, flow)
        for rate in (int(r) for r in args.rates.split(",") if r)
        for recovery in recoveries
        for connectors in (c.strip() for c in args.connectors.split(",") if c.strip())
        for flow in runs
    ]
    for n, (rate, recovery, connectors, flow) in enumerate(configs, 1):
        print(
            f"[{n}/{len(configs)}] {flow.label}, {connectors} connectors, {rate:,} events/s, "
            f"recovery {'on' if recovery else 'off'}, {args.seconds:g} s of load ...",
            flush=True,
        )
        result = run_one(flow, connectors, rate, recovery, args, rules_dir, logs)
        results.append(result)
        e2e, hop = result["event_to_webhook_ms"], result["event_to_trigger_ms"]
        print(
            f"  event to trigger p50 {hop['p50']:.1f} ms, p99 {hop['p99']:.1f} ms; "
            f"event to webhook p50 {e2e['p50']:.1f} ms, p99 {e2e['p99']:.1f} ms, "
            f"p99.9 {e2e['p999']:.1f} ms; idle CPU {result['idle_cpu_core_share']:.1%} "
            f"of a core; {result['missing']} probe(s) missing",
            flush=True,
        )

    print()
    for flow in runs:
        print(flow.describe())
    labels = {flow.role: flow.label for flow in runs}
    rows = []
    for r in results:
        e2e, hop1, hop2, late, kafka = (
            r["event_to_webhook_ms"],
            r["event_to_trigger_ms"],
            r["trigger_to_webhook_ms"],
            r["delayed_late_ms"],
            r["kafka_alone_ms"],
        )
        rows.append(
            [
                labels[r["flow"]], r["connectors"], r["rate"], "on" if r["recovery"] else "off",
                len(total_of(r)),
                e2e["p50"], e2e["p99"], e2e["p999"], kafka["p50"], kafka["p99"],
                hop1["p50"], hop1["p99"], hop2["p50"], hop2["p99"],
                late["p99"], f"{r['idle_cpu_core_share']:.1%}",
            ]
        )  # fmt: skip
    print_table(
        f"event produced -> webhook received (ms), {args.partitions} partitions, one process "
        f"each (flow, dispatcher, load), snapshots every {args.snapshot_interval:g} s, "
        f"first {args.skip_s:g} s of each load not counted, "
        f"delayed rules with event_lateness_s={args.lateness:g}",
        [
            "flow", "connectors", "events/s", "recovery", "counted",
            "p50", "p99", "p99.9", "kafka p50", "kafka p99",
            "flow p50", "flow p99", "dispatch p50", "dispatch p99",
            "delayed late p99", "idle CPU",
        ],
        rows,
    )  # fmt: skip
    before_new = _before_new(runs, results)
    _ratios(results)
    path = write_json(
        "latency",
        {
            "benchmark": "latency",
            "flows": [flow.as_json() for flow in runs],
            "partitions": args.partitions,
            "probe_rate": args.probe_rate,
            "event_lateness_s": args.lateness,
            "before_vs_new_event_to_trigger_ms": before_new,
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


def total_of(result: dict[str, Any]) -> list[float]:
    return [ms for _at, kind, ms in result["timeline"] if kind == "total"]


def _before_new(runs: list[Flow], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Event to trigger record (the flow's hop), before against new, per configuration."""
    if len(runs) < 2:
        return []
    by = {(r["flow"], r["connectors"], r["rate"], r["recovery"]): r for r in results}
    out, rows = [], []
    for (role, connectors, rate, recovery), new in by.items():
        old = by.get(("before", connectors, rate, recovery))
        if role != "new" or old is None:
            continue
        b, n = old["event_to_trigger_ms"], new["event_to_trigger_ms"]
        ratios = {q: n[q] / b[q] if b[q] > 0 else float("nan") for q in ("p50", "p99", "p999")}
        out.append(
            {"rate": rate, "recovery": recovery, "connectors": connectors,
             "before": b, "new": n, "new_over_before": ratios}
        )  # fmt: skip
        rows.append(
            [rate, "on" if recovery else "off", connectors,
             b["p50"], b["p99"], b["p999"], n["p50"], n["p99"], n["p999"],
             *(f"{ratios[q]:.2f}" for q in ("p50", "p99", "p999"))]
        )  # fmt: skip
    before = runs[0]
    print_table(
        f"event produced -> trigger record (ms), before ({before.rev}, {before.sha[:10]}) "
        "vs new (working tree), same configuration one after the other",
        ["events/s", "recovery", "connectors",
         "before p50", "before p99", "before p99.9", "new p50", "new p99", "new p99.9",
         "new/before p50", "p99", "p99.9"],
        rows,
    )  # fmt: skip
    return out


def _ratios(results: list[dict[str, Any]]) -> None:
    by = {(r["flow"], r["connectors"], r["rate"], r["recovery"]): r for r in results}
    lines = []
    for (role, connectors, rate, recovery), r in sorted(by.items()):
        stock = by.get((role, "stock", rate, recovery))
        if connectors == "own" and stock is not None:
            s, o = stock["event_to_webhook_ms"], r["event_to_webhook_ms"]
            lines.append(
                f"  {role}, {rate:,} events/s, recovery {'on' if recovery else 'off'}: stock/own "
                f"p50 {s['p50'] / o['p50']:.2f}, p99 {s['p99'] / o['p99']:.2f}, idle CPU "
                f"{stock['idle_cpu_core_share'] / max(r['idle_cpu_core_share'], 1e-9):.1f}"
            )
    if lines:
        print("\nstock against own connectors, event to webhook (same run):")
        print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
