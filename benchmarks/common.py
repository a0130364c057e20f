"""Shared pieces of the benchmarks: services, isolated settings, child processes, output."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from pulse import services
from pulse.services.kafka import ensure_topics
from pulse.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results"


def bench_settings(**overrides: Any) -> Settings:
    """Settings on the local services with a fresh topic and key prefix."""
    tag = f"bench{uuid.uuid4().hex[:6]}"
    base = load_settings()
    settings = load_settings(
        environ=base.as_environ(),
        topic_prefix=tag,
        redis_prefix=tag,
        consumer_group_prefix=tag,
        **overrides,
    )
    services.up(settings, create_topics=False)
    ensure_topics(settings)
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(settings: Settings, *args: str, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **settings.as_environ())
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", *args], env=env, stdout=fh, stderr=fh
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_bytes(orjson.dumps({"machine": machine(), **payload}, option=orjson.OPT_INDENT_2))
    return path


def rules_without_triggers(path: Path) -> Path:
    """A rule directory with the shipped loyalty programme, RFM and policy but no
    trigger rule, for a benchmark to measure without rules or add its own."""
    source = Path(load_settings().rules_dir)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.yaml"):
        old.unlink()
    for name in ("loyalty.yaml", "rfm.yaml", "policy.yaml"):
        (path / name).write_text((source / name).read_text())
    return path
