"""The ``pulse`` command: services, the three processes, the demo, configuration."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from pulse.rules_files import RulesFileError
from pulse.services.process import ServiceError
from pulse.settings import Settings, SettingsError, load_settings

log = logging.getLogger("pulse")

DESCRIPTION = """\
Pulse: a streaming, real-time personalization engine.

Events (HTTP or Kafka) update per-customer profiles, models and trigger rules
within milliseconds; profiles and recommendations are served from Redis.

Typical session:
  pulse services up      start local Kafka and Redis (downloads Kafka once)
  pulse run              the dataflow       (one terminal each,
  pulse api              the HTTP API        or just `pulse demo`)
  pulse dispatch         the trigger dispatcher
  pulse rules check      marketers: check, test, dry-run and deploy rules/*.yaml

Settings come from PULSE_* environment variables and an optional TOML file
(--config or PULSE_CONFIG); `pulse config` prints the effective ones.
"""


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(config_file=args.config, **overrides)


def cmd_services(args: argparse.Namespace) -> int:
    from pulse import services

    overrides: dict[str, Any] = {}
    if getattr(args, "no_persist", False):
        overrides["redis_persistence"] = False
    settings = _settings(args, **overrides)
    if args.action == "up":
        started = services.up(settings)
        print(f"started: {', '.join(started)}" if started else "already running")
        _print_status(services.status(settings))
    elif args.action == "down":
        stopped = services.down(settings)
        print(
            f"stopped: {', '.join(stopped)}" if stopped else "nothing started by pulse is running"
        )
    else:
        statuses = services.status(settings)
        _print_status(statuses)
        return 0 if all(s.running for s in statuses) else 3
    return 0


def _print_status(statuses: Sequence[object]) -> None:
    from pulse.services.process import ServiceStatus

    print(f"{'service':8} {'state':8} {'address':28} {'version':9} {'pid':>7}  owner")
    for s in statuses:
        assert isinstance(s, ServiceStatus)
        state = "up" if s.running else "down"
        pid = str(s.pid) if s.pid else "-"
        extra = f"  ({s.detail})" if s.detail else ""
        print(f"{s.name:8} {state:8} {s.address:28} {s.version:9} {pid:>7}  {s.owner}{extra}")


def cmd_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sys.stdout.write(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def require_topics(settings: Settings, process: str) -> None:
    """Every long-running process checks its topics before it starts (see
    pulse.services.kafka.require_topics)."""
    from pulse.services.kafka import require_topics as check

    check(settings, process)


def cmd_run(args: argparse.Namespace) -> int:
    from dataflows.run import run

    settings = _settings(args, workers=args.workers, flow_metrics_port=args.metrics_port)
    require_topics(settings, "pulse run")
    recovery = (
        None if args.no_recovery else Path(args.recovery_dir or settings.effective_recovery_dir)
    )
    addresses = args.addresses.split(",") if args.addresses else None
    run(settings, recovery_dir=recovery, process_id=args.process_id, addresses=addresses)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    settings = _settings(args, api_host=args.host, api_port=args.port)
    require_topics(settings, "pulse api")
    if args.server == "granian":
        _serve_granian(settings)
        return 0
    import uvicorn

    from api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


def _serve_granian(settings: Settings) -> None:
    """The app on granian: one worker process, HTTP/1.1, uvloop.

    Measured against uvicorn in docs/api-performance.md: no faster with the
    same CPU, so it stays an option for comparison, installed with ``.[dev]``.

    Granian imports the app in its worker itself (api/asgi.py), so the
    settings this command resolved (flags, config file, environment) travel
    to it as PULSE_* variables, which outrank the config file there.
    """
    try:
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces, Loops
    except ImportError:
        raise SystemExit("pulse api --server granian: install the dev extra (granian)") from None

    os.environ.update(settings.as_environ())
    Granian(
        "api.asgi:from_environment",
        factory=True,
        address=settings.api_host,
        port=settings.api_port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
        log_access=False,
    ).serve()


def cmd_dispatch(args: argparse.Namespace) -> int:
    from dispatch.service import serve

    if args.action is None and (args.rule or args.channel or args.dry_run):
        print("pulse dispatch: --rule, --channel and --dry-run go with retry-dlq", file=sys.stderr)
        return 2
    settings = _settings(args)
    require_topics(settings, "pulse dispatch")
    if args.action == "retry-dlq":
        return _retry_dlq(settings, args)
    serve(settings)
    return 0


def _retry_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from dispatch.redrive import RedriveReport, redrive

    def progress(report: RedriveReport) -> None:
        print(f"  read {report.read:,}, re-driven {report.redriven:,}", file=sys.stderr)

    report = redrive(
        settings, rule=args.rule, channel=args.channel, dry_run=args.dry_run, progress=progress
    )
    verb = "would re-drive" if args.dry_run else "re-drove"
    print(
        f"{settings.triggers_dlq_topic}: read {report.read:,} dead letter(s); {verb} "
        f"{report.redriven:,} to {settings.triggers_topic}; {report.skipped:,} not matching; "
        f"{report.undecodable:,} not triggers (left where they are)"
    )
    for reason, count in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>6,}  {reason}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pulse.demo import run_demo

    settings = _settings(args)
    return run_demo(settings, customers=args.customers, rate=args.rate, config=args.config)


def cmd_rules(args: argparse.Namespace) -> int:
    from pulse import rules_cli

    return rules_cli.run(args, _settings(args))


def cmd_status(args: argparse.Namespace) -> int:
    from pulse.status import collect, render

    status = collect(_settings(args), sample_s=args.sample)
    if args.json:
        print(orjson.dumps(status.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(status))
    return 1 if status.errors else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from pulse.replay import ReplayError, replay, source

    settings = _settings(args)
    path = Path(args.file)
    try:
        records = source(
            path, args.format, Path(args.mapping) if args.mapping else None, args.preset
        )
        with Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("replay", total=None)
            report = replay(
                settings,
                records,
                rate=args.rate,
                progress=lambda n: bar.update(task, completed=n),
            )
    except ReplayError as exc:
        print(f"pulse replay: {exc}", file=sys.stderr)
        return 2
    rate = report.sent / report.seconds if report.seconds else 0.0
    print(
        f"replayed {report.sent} of {report.read} records to {settings.events_topic} "
        f"in {report.seconds:.1f} s ({rate:,.0f}/s)"
    )
    if report.unkeyed:
        print(
            f"{report.unkeyed} record(s) had no customer key (not JSON or no ids): "
            f"the dataflow will dead-letter them"
        )
    for failure in report.failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 0 if report.sent == report.read and not report.failures else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulse", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (else $PULSE_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_: str, description: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    p = add(
        "services",
        cmd_services,
        "start, stop or inspect local Kafka and Redis",
        "Manage the real Kafka (KRaft, single node, 127.0.0.1:9092) and Redis\n"
        "(127.0.0.1:6379) that Pulse runs on. Kafka's jars are fetched once with\n"
        "Maven into .cache/kafka; data lives under .cache and survives restarts.\n"
        "A server already running is reused; `down` stops only what `up` started.\n"
        "With PULSE_KAFKA_BOOTSTRAP / PULSE_REDIS_URL set, nothing is started.\n"
        "`status` exits 3 when a service is down.",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument(
        "--no-persist",
        action="store_true",
        help="start Redis without persistence (what the tests use)",
    )

    add(
        "config",
        cmd_config,
        "print the effective settings (secrets masked)",
        "Print the settings Pulse would run with, after the TOML file and PULSE_*\n"
        "variables, as JSON. Invalid settings exit 2 naming the field.",
    )

    p = add(
        "run",
        cmd_run,
        "run the personalization dataflow",
        "Consume pulse.events, update per-customer state, write profiles to Redis,\n"
        "evaluate the trigger rules of rules_dir (then each deployed version) and\n"
        "write triggers to pulse.triggers and every decision to pulse.decisions.\n"
        "An invalid rule directory stops the start with every problem listed.\n"
        "State snapshots go to the recovery directory (default\n"
        ".cache/recovery/<topic_prefix>) every snapshot_interval_s; a restart\n"
        "resumes from the last snapshot.",
    )
    p.add_argument("--recovery-dir", metavar="DIR", help="where recovery snapshots live")
    p.add_argument(
        "--no-recovery",
        action="store_true",
        help="keep no snapshots (restarts re-read the topic from the start)",
    )
    p.add_argument("--workers", type=int, help="worker threads in this process")
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://<api_host>:PORT/metrics (events/s, lag "
        "per partition, batch update time); default flow_metrics_port, 0 = off",
    )
    p.add_argument("--process-id", type=int, help="this process's index in a cluster")
    p.add_argument(
        "--addresses",
        metavar="HOST:PORT,...",
        help="all cluster processes' addresses, for Bytewax cluster mode",
    )

    p = add(
        "api",
        cmd_api,
        "serve the HTTP API (collector, profiles, recommendations) and the console",
        "Serve the FastAPI app: POST /v1/events, GET /v1/customers/{id}/profile,\n"
        "GET /v1/customers/{id}/recommendations, /healthz, /readyz, /metrics, /docs,\n"
        "and the web console at /console (docs/console.md).\n"
        "On uvicorn (httptools, uvloop); --server granian to compare (dev dependency).",
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="the ASGI server (default uvicorn; granian, a dev dependency, for "
        "comparison: docs/api-performance.md)",
    )

    p = add(
        "dispatch",
        cmd_dispatch,
        "deliver fired triggers through their channels; re-drive dead letters",
        "Consume pulse.triggers and deliver each trigger exactly once (idempotency\n"
        "key = trigger id, leased and recorded in Redis). dispatch_channel=log\n"
        "prints one JSON line per trigger; dispatch_channel=routed sends each to its\n"
        "own channel (webhook: Standard Webhooks signatures, retries, a circuit per\n"
        "endpoint). Permanent failures and exhausted retries go to\n"
        "<prefix>.triggers.dlq with the reason.\n\n"
        "  pulse dispatch                 run a dispatcher (any number share the load)\n"
        "  pulse dispatch retry-dlq       send the dead letters through again, once\n"
        "                                 their cause is fixed (--rule, --channel to\n"
        "                                 choose, --dry-run to count only)",
    )
    p.add_argument(
        "action", nargs="?", choices=["retry-dlq"], help="retry-dlq: re-drive dead letters"
    )
    p.add_argument("--rule", help="retry-dlq: only this rule's triggers")
    p.add_argument("--channel", help="retry-dlq: only triggers for this channel")
    p.add_argument("--dry-run", action="store_true", help="retry-dlq: count, change nothing")

    p = add(
        "status",
        cmd_status,
        "how the pipeline keeps up: lag per partition, events/s, last snapshot",
        "Show the dataflow's position and lag on each partition of the events topic,\n"
        "its current events/s (sampled over --sample seconds) and last snapshot\n"
        "time, and the dispatcher's lag on the triggers topic. Exits 1 when Kafka or\n"
        "Redis cannot be read.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sample", type=float, default=1.0, help="seconds to measure events/s over")

    p = add(
        "replay",
        cmd_replay,
        "import historical events into the events topic",
        "Produce events from FILE into <topic_prefix>.events, keyed by customer.\n"
        "FILE is JSON lines (one Pulse event per line; docs/events.md) or CSV with\n"
        "--mapping FILE.toml (one event per row; see pulse/replay.py ColumnMapping)\n"
        "or --preset online-retail (UCI Online Retail invoices -> orders, refunds).\n"
        "Invalid records are not filtered here: the dataflow dead-letters them with\n"
        "the reason. Exits 1 if any record was not acknowledged by Kafka.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--format",
        choices=["auto", "jsonl", "csv"],
        default="auto",
        help="input format (auto: by file extension)",
    )
    p.add_argument("--mapping", metavar="TOML", help="CSV column mapping")
    p.add_argument("--preset", choices=["online-retail"], help="a built-in CSV conversion")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events per second (default: as fast as Kafka takes them)",
    )

    p = add(
        "demo",
        cmd_demo,
        "everything at once: services, processes, sample traffic",
        "Start Kafka and Redis, the dataflow, the API and the dispatcher; replay a\n"
        "realistic generated stream of shoppers through the API; print triggers\n"
        "as they fire; show a profile and recommendations. Ctrl-C stops it all.",
    )
    p.add_argument("--customers", type=int, default=200, help="simulated customers (200)")
    p.add_argument("--rate", type=float, default=300.0, help="events per second (300)")

    from pulse import rules_cli

    rules_cli.add_parser(sub, argparse.RawDescriptionHelpFormatter)
    sub.choices["rules"].set_defaults(func=cmd_rules)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
        return code
    except SettingsError as exc:
        print(f"pulse: invalid settings: {exc}", file=sys.stderr)
        return 2
    except (ServiceError, RulesFileError) as exc:
        print(f"pulse: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
