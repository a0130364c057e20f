"""``pulse demo``: the whole stack on one machine, with traffic and visible results."""

from __future__ import annotations

import base64
import http.client
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pulse import services
from pulse.keys import RedisKeys
from pulse.rules_files import copy_with_waits
from pulse.sample_stream import shopper_events
from pulse.settings import Settings

# At least 120 columns, so the tables stay readable when written to a file.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


class _Processes:
    """The dataflow, API and dispatcher as child processes, stopped together."""

    def __init__(self, settings: Settings, config: str | None, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.env = dict(os.environ, **settings.as_environ())
        if config:
            self.env["PULSE_CONFIG"] = config
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, stdout: int | IO[bytes] | None = None) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the child
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", *args],
            env=self.env,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
        )

    def check(self) -> None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {self.log_dir / name}.log"
                )

    def stop(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def run_demo(settings: Settings, *, customers: int, rate: float, config: str | None) -> int:
    started_at = time.monotonic()
    log_dir = Path(settings.cache_dir) / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]Pulse demo")
    if not settings.write_keys or not settings.read_keys:
        # The demo runs the API as in production, with keys: its own, made now.
        settings = msgspec.structs.replace(
            settings,
            write_keys=settings.write_keys or (f"pk_write_{secrets.token_urlsafe(12)}",),
            read_keys=settings.read_keys or (f"pk_read_{secrets.token_urlsafe(12)}",),
        )
    console.print(
        f"API keys for this demo: write key [bold]{settings.write_keys[0]}[/] (ingest only), "
        f"read key [bold]{settings.read_keys[0]}[/]"
    )
    console.print("starting Kafka and Redis (the first run downloads Kafka's jars once)...")
    started = services.up(settings)
    console.print(
        f"services ready ({', '.join(started) or 'already running'}) "
        f"in {time.monotonic() - started_at:.1f} s"
    )

    # The shipped rules wait 30 minutes and more, and the policy spaces
    # marketing 16 hours apart; the demo's copy does both in seconds.
    rules_dir = copy_with_waits(settings.rules_dir, log_dir / "rules", DEMO_WAITS)
    _shorten_smart_sending(rules_dir / "policy.yaml", DEMO_SMART_SENDING)
    settings = msgspec.structs.replace(settings, rules_dir=str(rules_dir))
    console.print(
        "rules: the shipped rules/ with the demo's shorter waits ("
        + ", ".join(f"{rule} {wait}" for rule, wait in DEMO_WAITS.items())
        + f") and smart sending of {DEMO_SMART_SENDING} instead of 16h"
    )
    procs = _Processes(settings, config, log_dir)
    triggers: list[dict[str, Any]] = []
    try:
        procs.start("dataflow", "run")
        procs.start("api", "api")
        procs.start("dispatcher", "dispatch", stdout=subprocess.PIPE)
        dispatcher_out = procs.children["dispatcher"].stdout
        assert dispatcher_out is not None
        threading.Thread(
            target=_print_triggers, args=(dispatcher_out, triggers), daemon=True
        ).start()
        _wait_ready(settings, procs)
        console.print(
            f"dataflow, API (http://{settings.api_host}:{settings.api_port}/docs) "
            f"and dispatcher running; logs in {log_dir}"
        )

        sent = _send_traffic(settings, procs, customers, rate)
        wait_s = max(_seconds(w) for w in DEMO_WAITS.values()) + settings.event_lateness_s + 5
        console.print(f"waiting {wait_s:.0f} s for the rules' waits to run out...")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            procs.check()
            time.sleep(0.5)

        _show_results(settings, sent, triggers)
        console.print(f"demo ready in {time.monotonic() - started_at:.1f} s")
        base = f"http://{settings.api_host}:{settings.api_port}"
        console.print(
            f"try it: curl -u {settings.read_keys[0]}: {base}/v1/customers/c-00001/profile"
        )
        if sys.stdin.isatty():
            console.print(
                f"everything keeps running: the API's documentation is at {base}/docs; "
                "Ctrl-C stops it"
            )
            while True:
                procs.check()
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("\nstopping...")
    finally:
        procs.stop()
        console.print(
            "dataflow, API and dispatcher stopped; Kafka and Redis keep running "
            "(`pulse services down` stops them)"
        )
    return 0 if triggers else 1


DEMO_WAITS = {"abandoned_cart": "10s", "browse_abandonment": "15s", "review_request": "20s"}
DEMO_SMART_SENDING = "20s"


def _shorten_smart_sending(policy: Path, window: str) -> None:
    import yaml

    data = yaml.safe_load(policy.read_text(encoding="utf-8"))
    data["smart_sending"] = {channel: window for channel in data.get("smart_sending", {})}
    policy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _seconds(duration: str) -> float:
    from engine.rules.durations import parse_duration

    return parse_duration(duration)


def _wait_ready(settings: Settings, procs: _Processes, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check()
        try:
            status, _ = _request(settings, "GET", "/readyz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not become ready in time")


def _request(
    settings: Settings,
    method: str,
    path: str,
    body: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, Any]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(settings.api_host, settings.api_port, timeout=10)
    # Segment's convention: the key is the Basic user name; ingest uses the write key.
    key = settings.write_keys[0] if method == "POST" else settings.read_keys[0]
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
    }
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, orjson.loads(data) if data else None
    finally:
        if own:
            conn.close()


def _send_traffic(
    settings: Settings, procs: _Processes, customers: int, rate: float
) -> Counter[str]:
    events = list(shopper_events(customers))
    sent: Counter[str] = Counter()
    conn = http.client.HTTPConnection(settings.api_host, settings.api_port, timeout=10)
    interval = 1.0 / rate
    next_at = time.monotonic()
    columns = (
        TextColumn("sending events"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("events", total=len(events), rate="")
        t0 = time.monotonic()
        for i, event in enumerate(events, 1):
            status, body = _request(settings, "POST", "/v1/events", orjson.dumps(event), conn)
            if status != 202:
                raise RuntimeError(f"collector refused an event ({status}): {body}")
            sent[event["type"]] += 1
            if i % 50 == 0:
                procs.check()
                progress.update(task, completed=i, rate=f"{i / (time.monotonic() - t0):.0f} ev/s")
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        progress.update(task, completed=len(events))
    conn.close()
    return sent


def _print_triggers(stream: IO[bytes], sink: list[dict[str, Any]]) -> None:
    for line in stream:
        try:
            delivery = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        sink.append(delivery)
        console.print(
            f"[bold magenta]trigger[/] {delivery['rule_id']} -> {delivery['customer_id']} "
            f"by {delivery.get('channel')}: {_summary(delivery.get('payload', {}))}"
        )


def _summary(payload: dict[str, Any]) -> str:
    """A payload in one short line: lists by their length, long text cut."""
    parts = []
    for key, value in payload.items():
        if isinstance(value, list):
            text = f"[{len(value)} item{'s' if len(value) != 1 else ''}]"
        elif isinstance(value, float):
            text = f"{value:.2f}"
        else:
            text = str(value)
        parts.append(f"{key}={text if len(text) <= 24 else text[:23] + '…'}")
    return ", ".join(parts) or "-"


def _show_results(settings: Settings, sent: Counter[str], triggers: list[dict[str, Any]]) -> None:
    table = Table(title="events sent through POST /v1/events")
    table.add_column("type")
    table.add_column("count", justify="right")
    for kind, count in sent.most_common():
        table.add_row(kind, str(count))
    console.print(table)
    _show_decisions(settings)
    console.print(f"[bold]{len(triggers)} trigger(s) delivered[/] (dispatcher log channel)")

    carts = [t for t in triggers if t["rule_id"] == "abandoned_cart"]
    customer = (carts or triggers)[-1]["customer_id"] if triggers else "c-00000"
    status, profile = _request(settings, "GET", f"/v1/customers/{customer}/profile")
    console.rule(f"profile of {customer} (GET /v1/customers/{customer}/profile)")
    console.print_json(data=profile if status == 200 else {"status": status, "body": profile})
    status, recs = _request(settings, "GET", f"/v1/customers/{customer}/recommendations?limit=5")
    console.rule(f"recommendations for {customer}")
    recs_table = Table()
    for column in ("sku", "name", "category", "price", "reason"):
        recs_table.add_column(column)
    for item in (recs or {}).get("items", []):
        recs_table.add_row(
            item["sku"],
            item.get("name") or "",
            item.get("category") or "",
            f"{item.get('price') or 0:.2f}",
            item["reason"],
        )
    console.print(recs_table)


def _show_decisions(settings: Settings) -> None:
    """Per rule: what fired, and why the rest was not sent (the same counts as `pulse status`)."""
    import redis

    from pulse.status import rule_status

    client: redis.Redis = redis.Redis.from_url(settings.redis)
    loaded, stats = rule_status(client, RedisKeys(settings.redis_prefix))
    client.close()
    version = loaded["version"] if loaded else "?"
    table = Table(title=f"what the rules decided (version {version})")
    for column in ("rule", "fired", "suppressed (by guard)", "held out", "deferred", "other"):
        table.add_column(
            column, justify="right" if column in ("fired", "held out", "deferred") else "left"
        )
    for rule_id, counts in stats.items():
        suppressed = ", ".join(
            f"{k.split(':', 1)[1]} {v}"
            for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
            if k.startswith("suppressed:")
        )
        other = ", ".join(
            f"{k} {v}"
            for k, v in sorted(counts.items())
            if k in ("entered", "cancelled", "exited", "converted", "error")
        )
        table.add_row(
            rule_id,
            str(counts.get("fired", 0)),
            suppressed or "-",
            str(counts.get("held_out", 0)),
            str(counts.get("deferred", 0)),
            other or "-",
        )
    console.print(table)
