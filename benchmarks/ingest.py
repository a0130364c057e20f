"""Collector throughput and latency at fixed offered rates (open loop).

The load generator runs in its own process and sends on a fixed schedule,
whatever the responses do; latency is measured from each request's scheduled
time, so a stalled server shows up as latency instead of as a slower offered
rate (no coordinated omission). It paces with sleeps: on two cores a spinning
generator would starve the API and Kafka it measures.

    python -m benchmarks.ingest [--seconds 10] [--rates 500,1000,2000] [--batch-rates 20,50,100]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from benchmarks.common import (
    HttpConnection,
    bench_settings,
    free_port,
    http_request,
    percentile,
    print_table,
    start,
    stop,
    write_json,
)

BATCH = 100


def wait_ready(proc: Any, url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with code {proc.returncode}; see its log")
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API was not ready within {timeout_s:.0f} s")


def _event(i: int) -> dict[str, Any]:
    return {
        "type": "product_view",
        "event_id": f"b-{i}",
        "customer_id": f"c-{i % 5000}",
        "sku": f"SKU-{i % 300}",
        "price": 4.95,
        "category": "mugs",
    }


async def _open_loop(
    host: str, port: int, path: str, rate: float, seconds: float, batch: int, connections: int
) -> dict[str, Any]:
    """Send at ``rate`` requests/s on a fixed schedule; latency from the scheduled time."""
    n = int(rate * seconds)
    requests = []
    for k in range(n):
        if batch == 1:
            body = orjson.dumps(_event(k))
        else:
            body = orjson.dumps({"events": [_event(k * batch + j) for j in range(batch)]})
        requests.append(http_request("POST", path, host, port, body))
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await HttpConnection.open(host, port))
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def one(scheduled: float, raw: bytes) -> None:
        conn = await idle.get()
        try:
            status = await conn.request(raw)
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            conn = await HttpConnection.open(host, port)
            idle.put_nowait(conn)
            return
        idle.put_nowait(conn)
        if status >= 300:
            errors[str(status)] = errors.get(str(status), 0) + 1
            return
        latencies.append((time.perf_counter() - scheduled) * 1000)

    tasks = []
    started = time.perf_counter()
    for k, raw in enumerate(requests):
        scheduled = started + k / rate
        pause = scheduled - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        tasks.append(asyncio.create_task(one(scheduled, raw)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not idle.empty():
        idle.get_nowait().writer.close()
    latencies.sort()
    ok = len(latencies)
    return {
        "offered_requests_per_s": rate,
        "offered_events_per_s": rate * batch,
        "requests": n,
        "ok": ok,
        "errors": errors,
        "achieved_events_per_s": ok * batch / elapsed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each step")
    parser.add_argument(
        "--rates",
        default="250,500,1000,2000",
        help="single-event requests per second, comma-separated",
    )
    parser.add_argument(
        "--batch-rates",
        default="10,25,50,100",
        help=f"batch requests ({BATCH} events each) per second",
    )
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    port = free_port()
    settings = bench_settings(api_port=port)
    api = start(settings, "api", log=Path(settings.cache_dir) / "bench" / "ingest-api.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(api, f"{base}/readyz")
        steps = []
        for rate in (float(r) for r in args.rates.split(",") if r):
            result = asyncio.run(
                _open_loop("127.0.0.1", port, "/v1/events", rate, args.seconds, 1, args.connections)
            )
            steps.append({"mode": "single", **result})
            print(
                f"single @ {rate:.0f}/s: p50 {result['p50_ms']:.2f} ms, "
                f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']}",
                flush=True,
            )
        for rate in (float(r) for r in args.batch_rates.split(",") if r):
            result = asyncio.run(
                _open_loop(
                    "127.0.0.1",
                    port,
                    "/v1/events/batch",
                    rate,
                    args.seconds,
                    BATCH,
                    args.connections,
                )
            )
            steps.append({"mode": f"batch of {BATCH}", **result})
            print(
                f"batch @ {rate:.0f}/s: p50 {result['p50_ms']:.2f} ms, "
                f"p99 {result['p99_ms']:.2f} ms, errors {result['errors']}",
                flush=True,
            )
    finally:
        stop(api)

    rows = [
        [
            s["mode"],
            s["offered_events_per_s"],
            s["achieved_events_per_s"],
            s["p50_ms"],
            s["p99_ms"],
            s["max_ms"],
            sum(s["errors"].values()),
        ]
        for s in steps
    ]
    print_table(
        "collector: POST /v1/events and /v1/events/batch, one API process, Kafka acks=all",
        ["mode", "offered ev/s", "achieved ev/s", "p50 ms", "p99 ms", "max ms", "errors"],
        rows,
    )
    path = write_json("ingest", {"benchmark": "ingest", "seconds": args.seconds, "steps": steps})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
