"""Console pages' render time, for ``benchmarks.api --console N``.

On the API benchmark's seeded Redis (``--customers`` profiles as the dataflow
writes them), with the shipped rules' decision counts, an hour of console
samples and full topic tails (so the overview, the charts and a customer's
timeline read as much as they ever do), one API process answers each page
``N`` times, one request at a time (the uncached overview 20 times, 1.1 s
apart). Server-side time is the page's own
``Server-Timing`` header (from the route's start to the rendered body: Redis,
Kafka and the template); client time is the whole round trip.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from confluent_kafka import Producer

from benchmarks.common import percentile, start, stop
from benchmarks.ingest import wait_ready
from engine.rules.validate import rule_set_files
from pulse.keys import RedisKeys
from pulse.rules_files import rule_files
from pulse.settings import Settings

ADMIN_KEY = "bench-admin-key"
TAIL_RECORDS = 20_000  # per topic: more than the console's tail reads (1,000 a partition)

PAGES = {
    # Pages that poll share one pipeline reading per second: spaced 1.1 s apart,
    # every request of this row reads Redis and Kafka afresh.
    "overview, uncached": "/console/overview/live",
    "overview": "/console",
    "overview live": "/console/overview/live",
    "rules": "/console/rules",
    "rule page": "/console/rules/abandoned_cart",
    "customer 360": "/console/customers/{customer}",
    "charts": "/console/charts",
}


def seed_console(settings: Settings, customers: int) -> None:
    """Decision counts per shipped rule, an hour of samples, full topic tails."""
    keys = RedisKeys(settings.redis_prefix)
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    rng = random.Random(5)
    names = rule_set_files(rule_files(settings.rules_dir))
    rule_ids = [name.removesuffix(".yaml") for name in names if name != "policy.yaml"]
    totals = {
        r: {
            "fired": rng.randrange(1_000, 50_000),
            "held_out": rng.randrange(100, 5_000),
            "converted:treated": rng.randrange(100, 900),
            "converted:holdout": rng.randrange(10, 90),
            "suppressed:smart_sending": rng.randrange(100, 9_000),
            "suppressed:no_consent": rng.randrange(100, 9_000),
        }
        for r in rule_ids
    }
    pipe = client.pipeline(transaction=False)
    for rule_id, counts in totals.items():
        pipe.hset(keys.rule_stats(rule_id), mapping=counts)  # type: ignore[arg-type]
    now = time.time()
    for n in range(360):  # one sample every 10 s for the last hour
        t = now - 3600 + n * 10
        sample = {
            "t": t,
            "in": n * 4_000,
            "processed": n * 3_990,
            "triggers": n * 40,
            "rules": {r: {k: v * n // 360 for k, v in c.items()} for r, c in totals.items()},
        }
        pipe.zadd(keys.console_samples(), {orjson.dumps(sample): t})
    pipe.set(keys.rules_status(), orjson.dumps({"version": "bench", "rules": len(rule_ids)}))
    pipe.execute()
    client.close()
    producer = Producer({"bootstrap.servers": settings.kafka, "linger.ms": 20})
    for i in range(TAIL_RECORDS):
        customer = f"c-{rng.randrange(customers)}"
        event = {"type": "page_view", "event_id": f"b{i}", "customer_id": customer, "url": "/"}
        producer.produce(settings.events_topic, orjson.dumps(event), customer.encode())
        decision = {"rule_id": "abandoned_cart", "customer_id": customer, "outcome": "fired"}
        producer.produce(settings.decisions_topic, orjson.dumps(decision), customer.encode())
        if i % 5000 == 0:
            producer.flush()
    producer.flush()


def _sign_in(client: httpx.Client) -> None:
    page = client.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None, "no CSRF field on the login page"
    answer = client.post("/console/login", data={"csrf": csrf.group(1), "key": ADMIN_KEY})
    assert answer.status_code in (200, 303), answer.text[:300]


def time_pages(
    settings: Settings, customers: int, requests: int, log_dir: Path
) -> list[dict[str, Any]]:
    """Each page ``requests`` times (after 5 unrecorded), one at a time."""
    seed_console(settings, customers)
    api = start(settings, "api", log=log_dir / "api-console.log")
    rows: list[dict[str, Any]] = []
    try:
        base = f"http://127.0.0.1:{settings.api_port}"
        wait_ready(api, f"{base}/readyz")
        rng = random.Random(3)
        with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as client:
            _sign_in(client)
            for name, template in PAGES.items():
                server: list[float] = []
                whole: list[float] = []
                spaced = name.endswith("uncached")
                count = min(requests, 20) if spaced else requests
                for n in range(count + 5):
                    if spaced:
                        time.sleep(1.1)
                    path = template.format(customer=f"c-{rng.randrange(customers)}")
                    began = time.perf_counter()
                    answer = client.get(path)
                    elapsed = (time.perf_counter() - began) * 1000
                    assert answer.status_code == 200, (path, answer.status_code)
                    timing = answer.headers.get("server-timing", "")
                    found = re.search(r"dur=([0-9.]+)", timing)
                    assert found is not None, f"{path}: no Server-Timing"
                    if n >= 5:
                        server.append(float(found.group(1)))
                        whole.append(elapsed)
                server.sort()
                whole.sort()
                rows.append(
                    {
                        "page": name,
                        "requests": count,
                        "server_ms": {
                            "p50": percentile(server, 0.5),
                            "p95": percentile(server, 0.95),
                            "max": server[-1],
                        },
                        "client_ms": {
                            "p50": percentile(whole, 0.5),
                            "p95": percentile(whole, 0.95),
                        },
                    }
                )
                r = rows[-1]
                print(
                    f"  {name:14} server p50 {r['server_ms']['p50']:.1f} p95 "
                    f"{r['server_ms']['p95']:.1f} max {r['server_ms']['max']:.1f} ms; "
                    f"client p50 {r['client_ms']['p50']:.1f} p95 {r['client_ms']['p95']:.1f} ms",
                    flush=True,
                )
    finally:
        stop(api)
    return rows
