"""Webhook delivery rate of one dispatcher against a receiver that takes its time.

Triggers of many customers wait on the triggers topic; one `pulse dispatch`
process delivers them to a webhook receiver (pulse/sinks.py: it verifies every
signature) that answers each request after ``--latency-ms``. The rate is
counted by the receiver, from the first trigger arriving to the last, so the
dispatcher's start-up (joining its group) is left out.

    python -m benchmarks.dispatch [--triggers 2000] [--latency-ms 20] [--concurrency 1,32]
                                  [--baseline DIR]

``--baseline DIR`` also runs the dispatcher of another checkout (for
example ``git archive HEAD | tar -x -C DIR``) on the same triggers, for a
before/after figure from one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Producer

from benchmarks.common import bench_settings, print_table, stop, write_json
from engine.triggers import Trigger
from pulse.settings import Settings, load_settings
from pulse.sinks import WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOG_DIR = Path(__file__).resolve().parent / "results" / "dispatch-logs"


def put_triggers(settings: Settings, count: int, customers: int) -> None:
    """``count`` triggers of ``customers`` customers, in turn, on the triggers topic."""
    producer = Producer({"bootstrap.servers": settings.kafka, "linger.ms": "5"})
    now = time.time()
    for i in range(count):
        trigger = Trigger(
            trigger_id=f"bench-{i:06d}",
            rule_id="tier_upgrade",
            customer_id=f"c-{i % customers}",
            origin_event_id=f"e-{i}",
            entry=1,
            fired_at=now,
            channel="webhook",
            template="tier-upgrade",
            category="transactional",
            priority=60,
            deadline=now + 3600,
            payload={"n": i},
        )
        producer.produce(
            settings.triggers_topic,
            key=trigger.customer_id.encode(),
            value=msgspec.json.encode(trigger),
        )
        producer.poll(0)
    if producer.flush(30):
        raise SystemExit("Kafka did not take every trigger")


def run_one(
    label: str, settings: Settings, receiver: WebhookReceiver, count: int, code: str | None
) -> dict[str, Any]:
    """Start a dispatcher (of ``code``'s checkout when given), time the receiver
    from the first arrival to the last, stop it."""
    env = dict(os.environ, **settings.as_environ())
    if code is not None:
        env["PYTHONPATH"] = code
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{label}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", "dispatch"],
            env=env,
            stdout=fh,
            stderr=fh,
            cwd=code,
        )
    try:
        first = last = None
        deadline = time.monotonic() + 60 + count * 0.05
        while time.monotonic() < deadline:
            arrived = len(receiver.accepted)
            if arrived and first is None:
                first = time.monotonic()
            if arrived >= count:
                last = time.monotonic()
                break
            if proc.poll() is not None:
                raise SystemExit(f"the dispatcher exited with {proc.returncode}; see {log}")
            time.sleep(0.01)
        if first is None or last is None:
            raise SystemExit(f"{label}: not every trigger arrived in time; see {log}")
    finally:
        stop(proc)
    seconds = last - first
    return {
        "dispatcher": label,
        "triggers": count,
        "seconds": seconds,
        "per_s": (count - 1) / seconds if seconds > 0 else float("inf"),
        "repeats": sum(receiver.accepted.values()) - len(receiver.accepted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--triggers", type=int, default=2000)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--baseline", help="another checkout's dispatcher, run first")
    args = parser.parse_args()

    runs: list[tuple[str, str | None, int]] = []
    if args.baseline:
        runs.append(("baseline", str(Path(args.baseline).resolve()), 1))
    runs += [(f"concurrency {c}", None, int(c)) for c in args.concurrency.split(",")]
    rows, results = [], []
    for label, code, concurrency in runs:
        with WebhookReceiver(SECRET, delay_s=args.latency_ms / 1000) as receiver:
            base = bench_settings(partitions=4)
            settings = load_settings(
                environ=base.as_environ(),
                dispatch_channel="routed",
                dispatch_concurrency=concurrency,
                webhook_url=receiver.url,
                webhook_secret=SECRET,
            )
            put_triggers(settings, args.triggers, args.customers)
            result = run_one(label.replace(" ", "-"), settings, receiver, args.triggers, code)
        result["label"] = label
        results.append(result)
        rows.append([label, result["triggers"], result["seconds"], result["per_s"]])
        print(f"{label}: {result['per_s']:,.0f} triggers/s", flush=True)
    print_table(
        f"webhook delivery, one dispatcher, receiver answering after {args.latency_ms:g} ms",
        ["dispatcher", "triggers", "seconds", "triggers/s"],
        rows,
    )
    path = write_json(
        "dispatch",
        {
            "latency_ms": args.latency_ms,
            "customers": args.customers,
            "results": results,
        },
    )
    print(f"\nresults in {path}")


if __name__ == "__main__":
    main()
