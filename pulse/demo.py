"""``pulse demo``: the whole stack on one machine, with traffic and visible results."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pulse import services
from pulse.demo_live import show_live_shopper
from pulse.keys import RedisKeys
from pulse.rules_files import copy_with_waits
from pulse.sample_stream import shopper_events
from pulse.settings import Settings
from pulse.sinks import SmtpSink, WebhookReceiver

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

    def start(self, name: str, *args: str) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the child
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "pulse.cli", *args],
            env=self.env,
            stdout=log,
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
    if not settings.write_keys or not settings.read_keys or not settings.admin_keys:
        # The demo runs the API as in production, with keys: its own, made now.
        settings = msgspec.structs.replace(
            settings,
            write_keys=settings.write_keys or (f"pk_write_{secrets.token_urlsafe(12)}",),
            read_keys=settings.read_keys or (f"pk_read_{secrets.token_urlsafe(12)}",),
            admin_keys=settings.admin_keys or (f"pk_admin_{secrets.token_urlsafe(12)}",),
        )
    if not settings.dispatch_metrics_port:
        # The console's overview shows deliveries from the dispatcher's metrics.
        settings = msgspec.structs.replace(settings, dispatch_metrics_port=_free_port())
    console.print(
        f"API keys for this demo: write key [bold]{settings.write_keys[0]}[/] (ingest only), "
        f"read key [bold]{settings.read_keys[0]}[/], "
        f"admin key [bold]{settings.admin_keys[0]}[/] (the console's deploy and erase)"
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
    (rules_dir / "crm_tier_sync.yaml").write_text(DEMO_WEBHOOK_RULE, encoding="utf-8")
    console.print("plus crm_tier_sync: a webhook to the demo's receiver whenever a tier goes up")
    receivers = contextlib.ExitStack()
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    webhook = receivers.enter_context(WebhookReceiver(webhook_secret))
    smtp = _start_smtp(receivers, log_dir)
    base = f"http://{settings.api_host}:{settings.api_port}"
    settings = msgspec.structs.replace(
        settings,
        dispatch_channel="routed",
        webhook_url=webhook.url,
        webhook_secret=webhook_secret,
        smtp_host="127.0.0.1" if smtp is not None else None,
        smtp_port=smtp.port if smtp is not None else settings.smtp_port,
        link_secret=settings.link_secret or secrets.token_urlsafe(24),
        public_url=base,
    )
    console.print(
        f"channels: e-mail to an SMTP server on 127.0.0.1:{smtp.port if smtp else '-'} "
        f"(Maildir {log_dir / 'maildir'}), webhooks to {webhook.url} (signatures checked "
        "with the Standard Webhooks library); SMS and push have no provider here, so those "
        "triggers go to the dead-letter topic with the reason"
    )
    procs = _Processes(settings, config, log_dir)
    arrivals: list[Arrival] = []
    live = False
    watching = threading.Event()
    try:
        procs.start("dataflow", "run")
        procs.start("api", "api")
        procs.start("dispatcher", "dispatch")
        threading.Thread(
            target=_watch, args=(smtp, webhook, arrivals, watching), daemon=True
        ).start()
        _wait_ready(settings, procs)
        console.print(
            f"dataflow, API (http://{settings.api_host}:{settings.api_port}/docs) "
            f"and dispatcher running; logs in {log_dir}"
        )
        _announce_console(settings)

        # New shoppers on every run: the rules' limits (one welcome ever, one
        # cart reminder a day) would otherwise silence a second run.
        first = _first_customer(settings, customers)
        console.print(f"shoppers of this run: c-{first:05d} to c-{first + customers - 1:05d}")
        sent = _send_traffic(settings, procs, customers, rate, first)
        wait_s = max(_seconds(w) for w in DEMO_WAITS.values()) + settings.event_lateness_s + 5
        console.print(f"waiting {wait_s:.0f} s for the rules' waits to run out...")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            procs.check()
            time.sleep(0.5)

        time.sleep(1.0)  # the last deliveries
        watching.set()
        _show_results(settings, sent, arrivals, smtp)
        live = show_live_shopper(
            lambda method, path, body: _request(settings, method, path, body), console
        )
        console.print(f"demo ready in {time.monotonic() - started_at:.1f} s")
        base = f"http://{settings.api_host}:{settings.api_port}"
        console.print(
            f"try it: curl -u {settings.read_keys[0]}: {base}/v1/customers/c-{first:05d}/profile"
        )
        _announce_console(settings)
        if sys.stdin.isatty():
            console.print(
                f"everything keeps running: the console is at {base}/console and the API's "
                f"documentation at {base}/docs; Ctrl-C stops it"
            )
            while True:
                procs.check()
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("\nstopping...")
    finally:
        watching.set()
        procs.stop()
        receivers.close()
        console.print(
            "dataflow, API and dispatcher stopped; Kafka and Redis keep running "
            "(`pulse services down` stops them)"
        )
    return 0 if arrivals and live else 1


def _announce_console(settings: Settings) -> None:
    url = f"http://{settings.api_host}:{settings.api_port}/console"
    console.print(
        f"[bold]console: {url}[/] (sign in with the admin key [bold]{settings.admin_keys[0]}[/], "
        f"or the read key {settings.read_keys[0]} to view only)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# A demo-only rule, so the demo has a webhook to deliver.
DEMO_WEBHOOK_RULE = """\
id: crm_tier_sync
description: Tell the CRM (the demo's webhook receiver) when a customer's tier goes up.
category: transactional
priority: 55
trigger:
  attribute: tier
  change: up
action:
  channel: webhook
  template: crm-tier-sync
  payload:
    tier: profile.tier
    previous_tier: profile.previous_tier
"""

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


def _first_customer(settings: Settings, customers: int) -> int:
    """The first customer number of this run, after those of earlier runs (in Redis)."""
    import redis

    client: redis.Redis = redis.Redis.from_url(settings.redis)
    try:
        return int(client.incrby(f"{settings.redis_prefix}:demo:customers", customers)) - customers
    finally:
        client.close()


def _send_traffic(
    settings: Settings, procs: _Processes, customers: int, rate: float, first: int
) -> Counter[str]:
    events = list(shopper_events(customers, first_customer=first))
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


class Arrival(msgspec.Struct, frozen=True):
    """One message as its receiver got it."""

    channel: str
    rule_id: str
    to: str
    what: str


def _start_smtp(stack: contextlib.ExitStack, log_dir: Path) -> SmtpSink | None:
    """The demo's SMTP server; without it e-mails are dead-lettered, and the demo says so."""
    maildir = log_dir / "maildir"
    if maildir.exists():
        shutil.rmtree(maildir)
    try:
        return stack.enter_context(SmtpSink(log_dir))
    except (RuntimeError, OSError) as exc:
        console.print(f"[yellow]no SMTP server for the demo ({exc}); e-mails are dead-lettered")
        return None


def _watch(
    smtp: SmtpSink | None,
    webhook: WebhookReceiver,
    arrivals: list[Arrival],
    stop: threading.Event,
) -> None:
    """Print each message as it reaches its receiver."""
    seen: set[str] = set()  # Message-IDs: the Maildir's order is not arrival order
    hooks = 0
    while not stop.wait(0.5):
        new: list[Arrival] = []
        if smtp is not None:
            for mail in smtp.messages():
                if str(mail["Message-ID"]) in seen:
                    continue
                seen.add(str(mail["Message-ID"]))
                new.append(
                    Arrival(
                        "email", str(mail["X-Pulse-Rule-Id"]), str(mail["To"]), str(mail["Subject"])
                    )
                )
        bodies = webhook.bodies()
        for body in bodies[hooks:]:
            data = body.get("data", {})
            new.append(
                Arrival(
                    "webhook",
                    data.get("rule_id", "?"),
                    data.get("customer_id", "?"),
                    _summary(data.get("payload", {})),
                )
            )
        hooks = len(bodies)
        for arrival in new:
            arrivals.append(arrival)
            console.print(
                f"[bold magenta]{arrival.channel}[/] {arrival.rule_id} -> {arrival.to}: "
                f"{arrival.what}"
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


def _show_results(
    settings: Settings, sent: Counter[str], arrivals: list[Arrival], smtp: SmtpSink | None
) -> None:
    table = Table(title="events sent through POST /v1/events")
    table.add_column("type")
    table.add_column("count", justify="right")
    for kind, count in sent.most_common():
        table.add_row(kind, str(count))
    console.print(table)
    _show_decisions(settings)
    received = Table(title="what the receivers got (counted by them, not by Pulse)")
    for column in ("channel", "rule", "messages"):
        received.add_column(column, justify="right" if column == "messages" else "left")
    for (channel, rule), count in sorted(Counter((a.channel, a.rule_id) for a in arrivals).items()):
        received.add_row(channel, rule, str(count))
    console.print(received)
    _show_dead_letters(settings)
    carts = [a for a in arrivals if a.channel == "email" and a.rule_id == "abandoned_cart"]
    if smtp is not None and carts:
        mail = next(m for m in smtp.messages() if str(m["X-Pulse-Rule-Id"]) == "abandoned_cart")
        console.rule(f"one e-mail as it arrived: {mail['Subject']}")
        console.print(f"To: {mail['To']}\nList-Unsubscribe: {mail['List-Unsubscribe']}")
        console.print(mail.get_body(("plain",)).get_content().strip())  # type: ignore[union-attr]
    emails = [a for a in arrivals if a.channel == "email"]
    customer = (carts or emails)[-1].to.split("@")[0] if (carts or emails) else "c-00000"
    status, profile = _request(settings, "GET", f"/v1/customers/{customer}/profile")
    console.rule(f"profile of {customer} (GET /v1/customers/{customer}/profile)")
    console.print_json(data=profile if status == 200 else {"status": status, "body": profile})
    status, recs = _request(settings, "GET", f"/v1/customers/{customer}/recommendations?k=5")
    console.rule(f"recommendations for {customer} ({(recs or {}).get('strategy', '?')})")
    recs_table = Table()
    for column in ("sku", "category", "score", "reason"):
        recs_table.add_column(column)
    for item in (recs or {}).get("items", []):
        recs_table.add_row(
            item["sku"], item.get("category") or "", f"{item['score']:.3f}", item["reason"]
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


def _show_dead_letters(settings: Settings) -> None:
    """Triggers the dispatcher could not deliver, by reason (from the DLQ topic)."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"demo-dlq-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    reasons: Counter[str] = Counter()
    try:
        consumer.subscribe([settings.triggers_dlq_topic])
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    headers = dict(msg.headers() or [])
                    reason = headers.get("pulse.reason") or b"?"
                    text = reason.decode() if isinstance(reason, bytes) else str(reason)
                    reasons[text] += 1
    finally:
        consumer.close()
    if not reasons:
        return
    table = Table(
        title=f"dead-lettered on {settings.triggers_dlq_topic} (pulse dispatch retry-dlq)"
    )
    table.add_column("reason")
    table.add_column("triggers", justify="right")
    for reason, count in reasons.most_common():
        table.add_row(reason, str(count))
    console.print(table)
