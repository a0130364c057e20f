"""API latency at fixed offered rates (open loop), per endpoint and ASGI server.

One API process (``pulse api --server uvicorn|granian``) on a Redis on
loopback seeded the way the dataflow writes it (dataflows/redis_sink.py,
dataflows/item_sink.py): ``--customers`` profile views (MessagePack, one hash
field each) and ``--items`` items (a hash each, scores in the popularity
sorted set). The collector (``POST /v1/events``) writes to Kafka with
``acks=all``, as in production.

The load generator is a separate process (uvloop, pre-encoded HTTP/1.1 on
``--connections`` keep-alive connections, responses read by Content-Length):
it sends each request at its scheduled time whatever the earlier ones are
doing (open loop), and latency is measured from the scheduled time, so a
stalled server shows up as latency rather than as a lower offered rate (no
coordinated omission). It reports its own CPU and how late its schedule let
each request go (send lag; waiting for a free connection is counted apart),
so a table can show it was not the bottleneck. The first ``--warmup`` seconds
of each point are sent but not counted. The server side comes from the API's
own ``/metrics`` (``pulse_api_request_seconds``, scraped at the start and end
of the counted part): quantiles interpolated within histogram buckets, as
Prometheus' ``histogram_quantile`` does. The API's CPU comes from /proc for
its whole process tree, per request, and for its busiest thread alone (the
one running the app's event loop under the GIL: what bounds one process, as
the other threads, granian's HTTP I/O for one, can use the second core). The
middleware's own cost is measured in-process too.

    python -m benchmarks.api                     # uvicorn and granian, 1,000 and 2,000/s, ~4 min
    python -m benchmarks.api [--servers uvicorn,granian] [--rates 1000,2000]
        [--endpoints profile,recommendations,events] [--seconds 15] [--warmup 2]
        [--customers 100000] [--items 10000] [--connections 64]
    python -m benchmarks.api --console 50 --console-only   # console pages' render time

``--console N`` also times every console page N times, one request at a time,
on the same seeded Redis with the shipped rules (benchmarks/console.py).

Run it with the services up (``pulse services up``); it uses its own topic and
key prefix and removes its keys and topics afterwards. On a shared machine run
it under ``nice``: other work shows up in the tails (the JSON records the load
average of each point).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import ApiMetrics, RequestTimer
from benchmarks import console
from benchmarks.common import (
    Flow,
    HttpConnection,
    bench_settings,
    checkout,
    drop_keys,
    free_port,
    http_request,
    percentile,
    print_table,
    start,
    stop,
    write_json,
)
from benchmarks.ingest import wait_ready
from engine.profile import CartItemView, ProfileView, encode_view
from engine.recs.relations import Similar, encode_similar
from engine.recs.shopper import Bought, Seen, ShopperItems, encode_items
from engine.recs.trending import POPULAR, TRENDING
from pulse.keys import RedisKeys
from pulse.settings import Settings, load_settings

READ_KEY = "bench-read-key"
WRITE_KEY = "bench-write-key"
CATEGORIES = tuple(f"category-{n:02d}" for n in range(24))
T0 = 1_767_600_000.0  # 2026-01-05: profiles' activity lies in the 90 days before it


@dataclass(frozen=True)
class Endpoint:
    """What one endpoint's load looks like: the route template (the server-side
    histogram's label), the request for the k-th send, the status it must get."""

    route: str
    method: str
    expect: int
    path: Callable[[int, random.Random, dict[str, Any]], str]  # (k, rng, spec) -> path
    body: Callable[[int, random.Random, dict[str, Any]], bytes] | None = None


def _customer(rng: random.Random, spec: dict[str, Any]) -> str:
    return f"c-{rng.randrange(spec['customers'])}"


def _item(rng: random.Random, spec: dict[str, Any]) -> str:
    return f"SKU-{rng.randrange(spec['items']):05d}"


def _event(k: int, rng: random.Random, spec: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "type": "product_view",
            "event_id": f"bench-{k}-{rng.getrandbits(32):08x}",
            "customer_id": _customer(rng, spec),
            "sku": _item(rng, spec),
            "price": 4.95,
            "category": rng.choice(CATEGORIES),
        }
    )


ENDPOINTS = {
    "profile": Endpoint(
        "/v1/customers/{customer_id}/profile",
        "GET",
        200,
        lambda k, rng, spec: f"/v1/customers/{_customer(rng, spec)}/profile",
    ),
    "recommendations": Endpoint(
        "/v1/customers/{customer_id}/recommendations",
        "GET",
        200,
        lambda k, rng, spec: f"/v1/customers/{_customer(rng, spec)}/recommendations?k=10",
    ),
    "similar": Endpoint(
        "/v1/items/{sku}/similar",
        "GET",
        200,
        lambda k, rng, spec: f"/v1/items/{_item(rng, spec)}/similar?k=10",
    ),
    "events": Endpoint("/v1/events", "POST", 202, lambda k, rng, spec: "/v1/events", _event),
}


# ---------------------------------------------------------------- the serving view


def _profile(i: int, rng: random.Random, items: int) -> ProfileView:
    """A shopper as the dataflow would serve one: views, categories, sometimes a
    cart and orders (sizes like benchmarks/profiles.py's, 400 to 900 bytes)."""
    views = rng.randrange(1, 40)
    cats = rng.sample(CATEGORIES, rng.randrange(1, 5))
    category_views = {c: rng.randrange(1, views + 1) for c in cats}
    top = max(category_views.values())
    orders = rng.choice((0, 0, 0, 1, 1, 2, 3, 5))
    spend = round(sum(rng.uniform(10, 120) for _ in range(orders)), 2)
    cart = [
        CartItemView(f"SKU-{rng.randrange(items):05d}", rng.randrange(1, 3), 9.5, c, f"Item {c}")
        for c in rng.sample(cats, rng.randrange(0, min(3, len(cats)) + 1))
        if rng.random() < 0.3
    ]
    first = T0 - rng.uniform(0, 90 * 86400)
    return ProfileView(
        customer_id=f"c-{i}",
        first_seen=first,
        last_seen=rng.uniform(first, T0),
        events_total=views + orders + len(cart),
        event_counts={"product_view": views, "order_completed": orders},
        sessions=rng.randrange(1, 12),
        recently_viewed=[f"SKU-{rng.randrange(items):05d}" for _ in range(min(views, 10))],
        category_views=category_views,
        category_affinity={c: round(n / top, 4) for c, n in category_views.items()},
        cart=cart,
        cart_value=sum(line.price * line.quantity for line in cart),
        cart_quantity=sum(line.quantity for line in cart),
        orders=orders,
        revenue=spend,
        average_order_value=round(spend / orders, 2) if orders else 0.0,
        last_order_at=T0 - rng.uniform(0, 60 * 86400) if orders else 0.0,
        orders_12m=orders,
        spend_12m=spend,
        loyalty_points=int(spend),
        tier="silver" if spend > 200 else "",
        consent={"email": rng.random() < 0.6},
        traits={"email": f"c-{i}@example.com"},
        segments=["buyers"] if orders else [],
    )


def _items_of(view: ProfileView, rng: random.Random, items: int) -> bytes:
    """The customer's items beside the view (the recommender's, engine/recs/shopper.py)."""
    viewed = [
        Seen(sku, view.last_seen - n * 600.0, CATEGORIES[int(sku[4:]) % len(CATEGORIES)])
        for n, sku in enumerate(view.recently_viewed)
    ]
    bought = {
        f"SKU-{rng.randrange(items):05d}": Bought(
            0.0, 1, view.last_order_at, rng.choice(CATEGORIES)
        )
        for _ in range(view.orders)
    }
    return encode_items(ShopperItems(viewed=viewed, bought=bought))


def seed(settings: Settings, customers: int, items: int, seed_value: int = 11) -> dict[str, Any]:
    """Profiles and items written as the dataflow's sinks write them: the view and
    the customer's items per profile; per item its hash and its similar items;
    the popular and trending lists, overall and per category."""
    rng = random.Random(seed_value)
    keys = RedisKeys(settings.redis_prefix)
    client: redis.Redis = redis.Redis.from_url(settings.redis)
    started = time.perf_counter()
    sizes = 0
    pipe = client.pipeline(transaction=False)
    for i in range(customers):
        profile = _profile(i, rng, items)
        view = encode_view(profile)
        sizes += len(view)
        pipe.hset(
            keys.profile(f"c-{i}"), mapping={"view": view, "items": _items_of(profile, rng, items)}
        )
        if len(pipe) >= 2000:
            pipe.execute()
            print(f"\r  profiles {i + 1:,}/{customers:,}", end="", flush=True)
    pipe.execute()
    for n in range(items):
        sku = f"SKU-{n:05d}"
        category = CATEGORIES[n % len(CATEGORIES)]
        # Zipf-like popularity: a few items take most of the interest.
        popularity = math.log(1.0 / (n + 1)) + 40_000.0
        pipe.zadd(keys.ranking(POPULAR), {sku: popularity})
        pipe.zadd(keys.ranking(f"{POPULAR}:{category}"), {sku: popularity})
        pipe.zadd(keys.ranking(TRENDING), {sku: popularity + rng.uniform(-2.0, 2.0)})
        pipe.hset(
            keys.item(sku),
            mapping={"sku": sku, "name": f"Item {n}", "category": category, "price": "9.5"},
        )
        related = sorted(rng.sample(range(items), 20))
        similar = [
            Similar(f"SKU-{m:05d}", round(1.0 / (rank + 1), 4), CATEGORIES[m % len(CATEGORIES)])
            for rank, m in enumerate(related)
        ]
        pipe.set(keys.similar(sku), encode_similar(similar))
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    client.close()
    elapsed = time.perf_counter() - started
    print(
        f"\r  seeded {customers:,} profiles (mean {sizes / max(1, customers):,.0f} B) and "
        f"{items:,} items in {elapsed:.1f} s",
        flush=True,
    )
    return {"customers": customers, "items": items, "profile_bytes_mean": sizes / customers}


def cleanup(settings: Settings) -> None:
    """The benchmark's keys and topics, gone."""
    drop_keys(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka})
    for future in admin.delete_topics(list(settings.all_topics), operation_timeout=10).values():
        with contextlib.suppress(Exception):  # already gone
            future.result()


# ---------------------------------------------------------------- the load generator


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    """Open-loop load of one endpoint at one rate (runs in the generator process)."""
    endpoint = ENDPOINTS[spec["endpoint"]]
    host, port, rate = spec["host"], spec["port"], spec["rate"]
    warmup_n = int(rate * spec["warmup"])
    n = warmup_n + int(rate * spec["seconds"])
    rng = random.Random(spec["seed"])
    headers = {"Authorization": f"Bearer {spec['key']}"}
    requests = []
    for k in range(n):
        path = endpoint.path(k, rng, spec)
        body = endpoint.body(k, rng, spec) if endpoint.body else b""
        requests.append(http_request(endpoint.method, path, host, port, body, headers))
    scrape_raw = http_request("GET", "/metrics", host, port)

    queued = [0.0] * n  # when the schedule let it go: the generator's own timing
    sent = [0.0] * n  # when a connection took it (later if all were busy)
    done = [0.0] * n
    status = [0] * n
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def connection() -> None:
        conn = await HttpConnection.open(host, port)
        while (k := await queue.get()) is not None:
            sent[k] = time.perf_counter()
            try:
                status[k] = await conn.request(requests[k])
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                status[k] = -1
                conn.close()
                conn = await HttpConnection.open(host, port)
            done[k] = time.perf_counter()
        conn.close()

    async def scrape() -> tuple[float, str]:
        conn = await HttpConnection.open(host, port)
        try:
            status, body = await conn.exchange(scrape_raw)
        finally:
            conn.close()
        # An API without /metrics (a baseline revision before it) has no server side.
        return time.perf_counter(), body.decode() if status == 200 else ""

    workers = [asyncio.create_task(connection()) for _ in range(spec["connections"])]
    await asyncio.sleep(0.2)  # connections open before the schedule starts
    started = time.perf_counter()
    before: asyncio.Task[tuple[float, str]] | None = None
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    for k in range(n):
        scheduled = started + k / rate
        pause = scheduled - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        if k == warmup_n:
            print("counting", flush=True)  # the parent reads the server's CPU now
            before = asyncio.create_task(scrape())
            cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        queued[k] = time.perf_counter()
        queue.put_nowait(k)
    for _ in workers:
        queue.put_nowait(None)
    # A saturated server would take minutes to answer the backlog: what is not
    # answered within ``grace`` seconds of the last send counts as unanswered.
    _finished, pending = await asyncio.wait(workers, timeout=spec["grace"])
    for worker in pending:
        worker.cancel()
    ended = time.perf_counter()
    print("done", flush=True)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    assert before is not None
    scraped_before, metrics_before = await before
    scraped_after, metrics_after = await scrape()

    counted = range(warmup_n, n)
    from_schedule, from_send, lag, waited = [], [], [], []
    errors: dict[str, int] = {}
    for k in counted:
        if done[k] == 0.0:
            errors["unanswered"] = errors.get("unanswered", 0) + 1
            continue
        if status[k] != endpoint.expect:
            errors[str(status[k])] = errors.get(str(status[k]), 0) + 1
            continue
        scheduled = started + k / rate
        from_schedule.append((done[k] - scheduled) * 1000)
        from_send.append((done[k] - sent[k]) * 1000)
    for k in counted:
        lag.append((queued[k] - (started + k / rate)) * 1000)
        if sent[k]:
            waited.append((sent[k] - queued[k]) * 1000)
    window = ended - (started + warmup_n / rate)
    cpu = (
        cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    ) / window
    return {
        "counted": len(counted),
        "ok": len(from_schedule),
        "errors": errors,
        "achieved_per_s": len(from_schedule) / window,
        "latency_ms": _quantiles(from_schedule),
        "service_ms": _quantiles(from_send),
        "send_lag_ms": _quantiles(lag),
        "connection_wait_ms": _quantiles(waited),
        "generator_cpu": cpu,
        "server_side": _server_side(
            metrics_before, metrics_after, endpoint.route, scraped_after - scraped_before
        ),
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    values.sort()
    return {
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "p99.9": percentile(values, 0.999),
        "max": values[-1] if values else math.nan,
    }


def _histogram(text: str, route: str) -> tuple[dict[float, float], float]:
    """The route's cumulative bucket counts (every method and status summed) and the
    process's CPU seconds, from one exposition."""
    buckets: dict[float, float] = {}
    cpu = math.nan
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "pulse_api_request_seconds_bucket":
                if sample.labels["route"] == route:
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == "process_cpu_seconds_total":
                cpu = sample.value
    return buckets, cpu


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding rank q;
    a rank in the +Inf bucket answers the highest finite bound."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = cumulative[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _server_side(before: str, after: str, route: str, window_s: float) -> dict[str, float]:
    """The counted part as the API saw it: the histogram's difference between two
    scrapes, in ms, and the serving process's CPU (share of one core)."""
    b0, cpu0 = _histogram(before, route)
    b1, cpu1 = _histogram(after, route)
    diff = {le: b1[le] - b0.get(le, 0.0) for le in b1}
    return {
        "requests": max(diff.values(), default=0.0),
        "p50": histogram_quantile(0.50, diff) * 1000,
        "p99": histogram_quantile(0.99, diff) * 1000,
        "p99.9": histogram_quantile(0.999, diff) * 1000,
        "cpu": (cpu1 - cpu0) / window_s,
    }


def generate(spec_path: str, out_path: str) -> int:
    import uvloop

    spec = orjson.loads(Path(spec_path).read_bytes())
    result = uvloop.run(_load(spec))
    Path(out_path).write_bytes(orjson.dumps(result))
    return 0


def run_point(settings: Settings, spec: dict[str, Any], api_pid: int) -> dict[str, Any]:
    """One endpoint at one rate, the generator in a process of its own; the API's
    CPU (its whole process tree: granian serves from a child) over the counted part."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_bytes(orjson.dumps(spec))
        load_before = os.getloadavg()[0]
        marks: dict[str, tuple[float, dict[int, float]]] = {}
        with subprocess.Popen(
            [sys.executable, "-m", "benchmarks.api", "_generate", str(spec_path), str(out_path)],
            env=dict(os.environ, **settings.as_environ()),
            stdout=subprocess.PIPE,
            text=True,
        ) as generator:
            assert generator.stdout is not None
            for line in generator.stdout:
                marks[line.strip()] = (time.perf_counter(), tree_cpu_seconds(api_pid))
        if generator.returncode != 0:
            raise SystemExit(f"the load generator failed ({generator.returncode})")
        # NaN (no figure: no /metrics, no answer) crosses JSON as null.
        result: dict[str, Any] = orjson.loads(out_path.read_bytes())
        for part in (
            "latency_ms",
            "service_ms",
            "send_lag_ms",
            "connection_wait_ms",
            "server_side",
        ):
            result[part] = {k: math.nan if v is None else v for k, v in result[part].items()}
    (t0, cpu0), (t1, cpu1) = marks["counting"], marks["done"]
    spent = {tid: cpu - cpu0.get(tid, 0.0) for tid, cpu in cpu1.items()}
    # Per request the server finished in the window (its /metrics count): when
    # it falls behind it also serves the warm-up's backlog then, which the
    # answers counted here leave out. Without /metrics, per counted answer.
    served = result["server_side"]["requests"]
    answered = max(1, served if served == served and served > 0 else result["ok"])
    result["api_cpu"] = sum(spent.values()) / (t1 - t0)
    result["api_cpu_ms_per_request"] = sum(spent.values()) * 1000 / answered
    # The busiest thread is the one holding the GIL: the event loop running the
    # app. What one process can serve is bounded by its share, not the total.
    result["busiest_thread_ms_per_request"] = max(spent.values(), default=0.0) * 1000 / answered
    result["loadavg_1m"] = [load_before, os.getloadavg()[0]]
    return result


def pin(pid: int, cpu: int) -> None:
    """Every thread of a process tree onto one CPU: servers with I/O threads of
    their own (granian) then get no more of a shared machine than one without."""
    for tid in tree_cpu_seconds(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, {cpu})


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU of every thread of a process and its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                stat = (task / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


# ---------------------------------------------------------------- the middleware's own cost


def middleware_cost(rounds: int = 5, calls: int = 20_000) -> dict[str, float]:
    """Microseconds a request spends in RequestTimer, and for comparison in a
    do-nothing Starlette BaseHTTPMiddleware, around a bare ASGI app (best of
    ``rounds``, in-process, on this process's event loop)."""
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.types import Receive, Scope, Send

    class Route:
        path = "/v1/customers/{customer_id}/profile"

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def passthrough(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    timed = RequestTimer(bare, ApiMetrics())
    based = BaseHTTPMiddleware(bare, dispatch=passthrough)

    def receiver() -> Callable[[], Any]:
        """The request body once, then nothing until the client goes: as a server's."""
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        return receive

    async def send(message: Any) -> None:
        return None

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": "/v1/customers/c-1/profile",
            "headers": [],
            "query_string": b"",
        }

    async def per_call(app: Any) -> float:
        best = math.inf
        for _ in range(rounds):
            began = time.perf_counter()
            for _ in range(calls):
                await app(scope(), receiver(), send)
            best = min(best, (time.perf_counter() - began) / calls)
        return best * 1e6

    async def measure() -> dict[str, float]:
        base = await per_call(bare)
        return {
            "bare_app_us": base,
            "request_timer_us": await per_call(timed) - base,
            "base_http_middleware_us": await per_call(based) - base,
        }

    import uvloop

    return uvloop.run(measure())


# ---------------------------------------------------------------- the run


def _server_run(
    settings: Settings,
    server: str,
    args: argparse.Namespace,
    log_dir: Path,
    flow: Flow | None = None,
    server_args: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Every endpoint at every rate on one API process: ``pulse api SERVER_ARGS``
    of the working tree, or of the revision checked out for ``flow``."""
    log = log_dir / f"api-{server.replace(' ', '-')}.log"
    if flow is not None:
        api = flow.start(settings, "api", *server_args, log=log)
    else:
        api = start(settings, "api", *server_args, log=log)
    points: list[dict[str, Any]] = []
    try:
        wait_ready(api, f"http://127.0.0.1:{settings.api_port}/readyz")
        if args.pin_cpu is not None:
            pin(api.pid, args.pin_cpu)
        for name in args.endpoints.split(","):
            for rate in (float(r) for r in args.rates.split(",") if r):
                spec = {
                    "endpoint": name,
                    "host": "127.0.0.1",
                    "port": settings.api_port,
                    "rate": rate,
                    "seconds": args.seconds,
                    "warmup": args.warmup,
                    "customers": args.customers,
                    "items": args.items,
                    "connections": args.connections,
                    "key": WRITE_KEY if ENDPOINTS[name].method == "POST" else READ_KEY,
                    "seed": len(points) + 1,
                    "grace": args.grace,
                }
                print(f"  {server} {name} @ {rate:,.0f}/s ...", end="", flush=True)
                result: dict[str, Any] = {"server": server, "endpoint": name, "rate": rate}
                result.update(run_point(settings, spec, api.pid))
                points.append(result)
                print("\r" + _describe(result), flush=True)
                if api.poll() is not None:
                    raise SystemExit(f"the API exited; see {log}")
    finally:
        stop(api)
    return points


def _medians(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per server, endpoint and rate, the round whose client p99 is the median of
    the rounds (one round: itself), so a table row is one real run, not a blend."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["server"], p["endpoint"], p["rate"]), []).append(p)
    out = []
    for runs in groups.values():
        ranked = sorted(runs, key=lambda p: _sortable(p["latency_ms"]["p99"]))
        out.append(ranked[(len(ranked) - 1) // 2])
    return out


def _sortable(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _achieved(p: dict[str, Any]) -> str:
    """Answered requests/s, marked when the server fell behind the offered rate."""
    saturated = p["errors"].get("unanswered") or p["achieved_per_s"] < 0.97 * p["rate"]
    return f"{p['achieved_per_s']:,.0f}" + (" (saturated)" if saturated else "")


def _describe(p: dict[str, Any]) -> str:
    c, s = p["latency_ms"], p["server_side"]
    errors = sum(p["errors"].values())
    warn = ""
    if p["send_lag_ms"]["p99"] > 1.0 or p["generator_cpu"] > 0.5:
        warn = "  (generator late or busy: see send lag and its CPU)"
    return (
        f"  {p['server']:8} {p['endpoint']:15} @ {p['rate']:6,.0f}/s: achieved "
        f"{_achieved(p)}/s, client p50 {c['p50']:.2f} p99 {c['p99']:.2f} "
        f"p99.9 {c['p99.9']:.2f} ms, server p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms, "
        f"API CPU {p['api_cpu']:.0%} ({p['api_cpu_ms_per_request']:.2f} ms a request, "
        f"{p['busiest_thread_ms_per_request']:.2f} in its busiest thread), "
        f"generator CPU {p['generator_cpu']:.0%}, send lag p99 "
        f"{p['send_lag_ms']['p99']:.2f} ms, errors {errors}{warn}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_generate":
        return generate(argv[1], argv[2])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", default="uvicorn,granian", help="ASGI servers to compare")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="endpoints to load")
    parser.add_argument("--rates", default="1000,2000", help="requests/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="counted load per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="load before counting")
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds after the last send to wait for answers; later ones count as unanswered",
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the API of this git revision (its own pulse api, uvicorn), first, "
        "checked out into <cache_dir>/bench/rev-<sha>: before against after",
    )
    parser.add_argument(
        "--pin-cpu",
        type=int,
        metavar="N",
        help="pin the API's threads to CPU N, so servers that run threads of their own "
        "compete for one core like those that do not (a fairer comparison on a busy machine)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server this many times, alternating; the table shows each "
        "point's median run by client p99 (the JSON has every run)",
    )
    parser.add_argument(
        "--rev",
        metavar="REV",
        help="run the API of this git revision instead of the working tree's (when "
        "others' unfinished changes are in it), checked out the same way",
    )
    parser.add_argument(
        "--console",
        type=int,
        default=0,
        metavar="N",
        help="also time every console page N times, one at a time (benchmarks/console.py)",
    )
    parser.add_argument(
        "--console-only", action="store_true", help="with --console: skip the open-loop load"
    )
    parser.add_argument("--name", default="api", help="results file benchmarks/results/NAME.json")
    args = parser.parse_args(argv)
    unknown = set(args.endpoints.split(",")) - set(ENDPOINTS)
    if unknown:
        parser.error(f"unknown endpoints {sorted(unknown)}; known: {', '.join(ENDPOINTS)}")

    print("middleware cost (in-process) ...", flush=True)
    overhead = middleware_cost()
    print(
        f"  RequestTimer {overhead['request_timer_us']:.1f} us a request; a do-nothing "
        f"BaseHTTPMiddleware {overhead['base_http_middleware_us']:.1f} us",
        flush=True,
    )
    settings = bench_settings(
        api_port=free_port(),
        read_keys=[READ_KEY],
        write_keys=[WRITE_KEY],
        admin_keys=[console.ADMIN_KEY],
        log_level="WARNING",
    )
    log_dir = Path(load_settings().cache_dir) / "bench"
    points: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    try:
        print(f"seeding Redis (prefix {settings.redis_prefix}) ...", flush=True)
        seeded = seed(settings, args.customers, args.items)
        if args.console:
            print(f"console pages, {args.console} requests each ...", flush=True)
            pages = console.time_pages(settings, args.customers, args.console, log_dir)
        if args.console_only:
            args.rounds, args.baseline = 0, None
        before = checkout(args.baseline) if args.baseline else None
        new = checkout(args.rev, role="new") if args.rev else None
        for flow in (before, new):
            if flow is not None:
                print(flow.describe(), flush=True)
        # Rounds alternate the servers, so a busy spell of the machine falls on
        # each of them rather than on one.
        for round_ in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {round_} of {args.rounds}", flush=True)
            if before is not None:
                runs = _server_run(settings, f"baseline {before.short}", args, log_dir, before)
                points += [dict(p, round=round_) for p in runs]
            for server in args.servers.split(","):
                runs = _server_run(settings, server, args, log_dir, new, ("--server", server))
                points += [dict(p, round=round_) for p in runs]
    finally:
        cleanup(settings)

    if pages:
        print_table(
            f"console pages, server side (Server-Timing) and client side, ms; "
            f"{args.customers:,} profiles, the shipped rules, {args.console} requests each",
            ["page", "srv p50", "srv p95", "srv max", "client p50", "client p95"],
            [
                [
                    r["page"],
                    r["server_ms"]["p50"],
                    r["server_ms"]["p95"],
                    r["server_ms"]["max"],
                    r["client_ms"]["p50"],
                    r["client_ms"]["p95"],
                ]
                for r in pages
            ],
        )
    median = " (the median of the rounds)" if args.rounds > 1 else ""
    rows = [
        [
            p["server"],
            p["endpoint"],
            p["rate"],
            _achieved(p),
            p["latency_ms"]["p50"],
            p["latency_ms"]["p99"],
            p["latency_ms"]["p99.9"],
            p["server_side"]["p50"],
            p["server_side"]["p99"],
            p["server_side"]["p99.9"],
            f"{p['api_cpu']:.0%}",
            p["api_cpu_ms_per_request"],
            p["busiest_thread_ms_per_request"],
            f"{p['generator_cpu']:.0%}",
            p["send_lag_ms"]["p99"],
            sum(p["errors"].values()),
        ]
        for p in _medians(points)
    ]
    print_table(
        f"API latency, open loop, one API process{median}; client side from the scheduled "
        f"send, "
        f"server side from /metrics (ms); {args.customers:,} profiles, {args.items:,} items",
        ["server", "endpoint", "offered/s", "achieved/s", "p50", "p99", "p99.9",
         "srv p50", "srv p99", "srv p99.9", "API CPU", "CPU ms/req", "loop ms/req", "gen CPU",
         "send lag p99",
         "errors"],
        rows,
    )  # fmt: skip
    path = write_json(
        args.name,
        {
            "benchmark": "api",
            "args": vars(args),
            "seeded": seeded,
            "middleware_us": overhead,
            "points": points,
            "console": pages,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
