"""``pulse rules``: check, test, dry-run, deploy and roll back trigger rules.

A marketer's loop: edit ``rules/*.yaml``, ``pulse rules check`` until it
names no problem, ``pulse rules test`` for the expected decisions, ``pulse
rules dry-run`` to see what last week's traffic would have triggered, then
``pulse rules deploy``; ``pulse rules rollback`` if it was a mistake.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.rules import testcases
from engine.rules.validate import parse_instant
from engine.rules.yamlcheck import Problem
from pulse.rules_files import (
    RulesFileError,
    load_action_book,
    load_loyalty,
    load_rfm,
    load_rules,
    rule_files,
)
from pulse.settings import Settings

# Tables go wide when written to a file or a pipe, rather than truncating ids.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


def _rules_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.dir or settings.rules_dir)


def _print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem)


def check(args: argparse.Namespace, settings: Settings) -> int:
    directory = _rules_dir(args, settings)
    loaded = load_rules(directory)
    problems = list(loaded.problems)
    # The loyalty programme and RFM bands are read at start-up; a broken one
    # would stop the dataflow, so it is a problem here too.
    for read in (load_loyalty, load_rfm):
        try:
            read(directory)
        except RulesFileError as exc:
            name = str(exc).split(": ", 1)[0]
            problems.append(Problem(name, 1, 1, str(exc).split(": ", 1)[-1]))
    # The next-best-action file is read at start-up too; same kind of messages.
    try:
        actions = load_action_book(directory)
    except RulesFileError as exc:
        name = str(exc).split(": ", 1)[0]
        problems.append(Problem(name, 1, 1, str(exc).split(": ", 1)[-1]))
    else:
        problems += actions.problems if actions is not None else []
    tests = _test_files(directory)
    for path in tests:
        _case, test_problems = testcases.parse(path.read_text(encoding="utf-8"), str(path))
        problems += test_problems
    _print_problems(problems)
    if problems:
        files = len({p.file for p in problems})
        print(f"{len(problems)} problem(s) in {files} file(s)", file=sys.stderr)
        return 1
    assert loaded.rules is not None
    print(
        f"ok: {len(loaded.rules.rules)} rule(s) enabled, {len(tests)} test file(s); "
        f"version {loaded.rules.version}"
    )
    return 0


def _test_files(directory: Path) -> list[Path]:
    tests = directory / "tests"
    return sorted([*tests.glob("*.yaml"), *tests.glob("*.yml")]) if tests.is_dir() else []


def test(args: argparse.Namespace, settings: Settings) -> int:
    directory = _rules_dir(args, settings)
    loaded = load_rules(directory)
    if loaded.rules is None:
        _print_problems(loaded.problems)
        print("the rules have problems: fix them first (pulse rules check)", file=sys.stderr)
        return 1
    loyalty = load_loyalty(directory)
    failed = 0
    ran = 0
    for path in _test_files(directory):
        case, problems = testcases.parse(path.read_text(encoding="utf-8"), str(path))
        if case is None:
            _print_problems(problems)
            failed += 1
            continue
        if args.k and args.k not in case.test.name and args.k not in path.name:
            continue
        ran += 1
        result = testcases.run(case, loaded.rules, loyalty)
        mark = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
        console.print(f"{mark} {path.name}: {case.test.name}")
        if not result.passed:
            failed += 1
            for failure in result.failures:
                console.print(f"     {failure}")
            if args.verbose:
                console.print("     decisions made:")
                for d in result.decisions:
                    console.print(f"       {testcases.describe(case.start, d)}")
    summary = f"{ran - failed if ran >= failed else 0} passed, {failed} failed"
    console.print(summary if failed else f"[green]{summary}[/]")
    return 1 if failed or ran == 0 else 0


def dry_run(args: argparse.Namespace, settings: Settings) -> int:
    from pulse.dryrun import dry_run as run_dry
    from pulse.dryrun import file_events, topic_events
    from pulse.replay import ReplayError

    directory = _rules_dir(args, settings)
    loaded = load_rules(directory)
    if loaded.rules is None:
        _print_problems(loaded.problems)
        return 1
    rules = loaded.rules.assuming_contactable() if args.contactable else loaded.rules
    unknown = sorted(set(args.rules) - set(rules.by_id))
    if unknown:
        print(f"pulse rules dry-run: unknown rule(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    since = _instant(args.since, "--since")
    until = _instant(args.until, "--until")
    if args.source == "topic":
        events = topic_events(settings)
        label = settings.events_topic
    else:
        path = Path(args.source)
        label = str(path)
        mapping = Path(args.mapping) if args.mapping else None
        events = file_events(path, args.format, mapping, args.preset)
    try:
        with Progress(
            TextColumn("replaying {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=err,
            transient=not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task(label, total=None, rate="")
            started = time.monotonic()

            def progress(n: int) -> None:
                rate = n / max(1e-9, time.monotonic() - started)
                bar.update(task, completed=n, rate=f"{rate:,.0f} events/s")

            report = run_dry(
                rules,
                events,
                loyalty=load_loyalty(directory),
                only=args.rules,
                since=since,
                until=until,
                samples=args.samples,
                progress=progress,
            )
    except (ReplayError, OSError, TimeoutError) as exc:
        print(f"pulse rules dry-run: {exc}", file=sys.stderr)
        return 2
    _print_report(report, args)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2))
        print(f"wrote {args.json}")
    return 0


def _instant(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    value = parse_instant(text)
    if value is None:
        raise SystemExit(f"pulse rules dry-run: {option} {text!r}: use a date or an RFC 3339 time")
    return value


def _print_report(report: Any, args: argparse.Namespace) -> None:
    def day(ts: float | None) -> str:
        return "-" if ts is None else time.strftime("%Y-%m-%d", time.gmtime(ts))

    console.print(
        f"dry-run of rule version {report.version}: {report.events:,} events of "
        f"{report.customers:,} customers, {day(report.first_event)} to {day(report.last_event)}, "
        f"in {report.seconds:.1f} s ({report.events / max(report.seconds, 1e-9):,.0f} events/s)"
        + (f"; {report.skipped} record(s) were not valid events" if report.skipped else "")
    )
    if args.contactable:
        console.print("(--contactable: every customer counted as reachable and consenting)")
    table = Table(title="what the rules would have done (nothing was sent)")
    for column in (
        "rule",
        "would fire",
        "suppressed (by guard)",
        "held out",
        "deferred",
        "cancelled",
        "exited",
        "errors",
        "converted",
        "sample customers (fired)",
    ):
        table.add_column(
            column, justify="right" if column in ("would fire", "held out") else "left"
        )
    for rule in report.rules.values():
        o = rule.outcomes
        suppressed = ", ".join(
            f"{k.split(':', 1)[1]} {v}"
            for k, v in rule.reasons.most_common()
            if k.startswith("suppressed:")
        )
        converted = " / ".join(
            f"{g} {rule.reasons[f'converted:{g}']}"
            for g in ("treated", "holdout")
            if rule.reasons[f"converted:{g}"]
        )
        table.add_row(
            rule.rule_id,
            f"{o['fired']:,}",
            suppressed or "-",
            f"{o['held_out']:,}",
            f"{o['deferred']:,}",
            f"{o['cancelled']:,}",
            f"{o['exited']:,}",
            f"{o['error']:,}",
            converted or "-",
            ", ".join(rule.samples.get("fired", [])) or "-",
        )
    console.print(table)


def deploy(args: argparse.Namespace, settings: Settings) -> int:
    from pulse.deployments import DeploymentError, new_deployment, publish, read_deployments

    directory = _rules_dir(args, settings)
    loaded = load_rules(directory)
    if loaded.rules is None:
        _print_problems(loaded.problems)
        print(
            f"refused: {len(loaded.problems)} problem(s); the running version stays",
            file=sys.stderr,
        )
        return 1
    files = rule_files(directory)
    deployment = new_deployment(files, settings)
    try:
        history = read_deployments(settings)
        if history and history[-1].version == deployment.version and not args.force:
            print(f"version {deployment.version} is already deployed (--force deploys it again)")
            return 0
        publish(settings, deployment)
    except DeploymentError as exc:
        print(f"pulse rules deploy: {exc}", file=sys.stderr)
        return 1
    _announce(deployment, len(loaded.rules.rules), "deployed")
    return (
        _wait_for_dataflow(settings, deployment.version, deployment.effective_at)
        if args.wait
        else 0
    )


def _announce(deployment: Any, rules: int, what: str) -> None:
    when = time.strftime("%H:%M:%S UTC", time.gmtime(deployment.effective_at))
    print(
        f"{what} version {deployment.version} ({rules} rule(s) enabled): in force for events "
        f"from {when}; every worker switches at that point of the stream"
    )


def _wait_for_dataflow(
    settings: Settings, version: str, effective_at: float, timeout_s: float = 30.0
) -> int:
    """Until the dataflow reports this very deployment (version and effective
    time: the same version can be deployed again, or be the base version)."""
    import redis

    from pulse.keys import RedisKeys

    client: redis.Redis = redis.Redis.from_url(settings.redis, socket_timeout=2)
    key = RedisKeys(settings.redis_prefix).rules_status()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        raw = client.get(key)
        status = orjson.loads(raw) if isinstance(raw, bytes) else {}
        if status.get("version") == version and status.get("effective_at") == effective_at:
            print(f"the dataflow has loaded version {version}")
            return 0
        time.sleep(0.2)
    print(
        f"the dataflow did not report version {version} within {timeout_s:.0f} s", file=sys.stderr
    )
    return 1


def rollback(args: argparse.Namespace, settings: Settings) -> int:
    from engine.rules.validate import load
    from pulse.deployments import DeploymentError, new_deployment, publish, read_deployments

    try:
        history = read_deployments(settings)
        if not history:
            print("nothing was deployed yet: nothing to roll back", file=sys.stderr)
            return 1
        current = history[-1].version
        previous = next((d for d in reversed(history) if d.version != current), None)
        # Before the first deployment the dataflow ran the rules of rules_dir.
        files = previous.files if previous is not None else rule_files(settings.rules_dir)
        target = new_deployment(files, settings).version
        if target == current:
            print(f"version {current} is the only one ever in force", file=sys.stderr)
            return 1
        deployment = new_deployment(files, settings, note=f"rollback from {current} to {target}")
        publish(settings, deployment)
    except DeploymentError as exc:
        print(f"pulse rules rollback: {exc}", file=sys.stderr)
        return 1
    loaded = load(files)
    _announce(
        deployment, len(loaded.rules.rules) if loaded.rules else 0, f"rolled back from {current}:"
    )
    return (
        _wait_for_dataflow(settings, deployment.version, deployment.effective_at)
        if args.wait
        else 0
    )


def versions(args: argparse.Namespace, settings: Settings) -> int:
    from pulse.deployments import DeploymentError, read_deployments

    try:
        history = read_deployments(settings)
    except DeploymentError as exc:
        print(f"pulse rules versions: {exc}", file=sys.stderr)
        return 1
    if not history:
        print(f"no deployments yet: the dataflow runs the rules in {settings.rules_dir}")
        return 0
    now = time.time()
    in_force = max(
        (d for d in history if d.effective_at <= now), key=lambda d: d.effective_at, default=None
    )
    table = Table(title=f"rule versions on {settings.control_topic}")
    for column in ("version", "deployed (UTC)", "in force from", "by", "files", "note", ""):
        table.add_column(column)
    for d in history:
        table.add_row(
            d.version,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.deployed_at)),
            time.strftime("%H:%M:%S", time.gmtime(d.effective_at)),
            d.deployed_by,
            str(len(d.files)),
            d.note,
            "[bold green]in force[/]" if d is in_force else "",
        )
    console.print(table)
    return 0


def schema(args: argparse.Namespace, settings: Settings) -> int:
    from engine.rules.docs import write_schemas

    for path in write_schemas(Path(args.out)):
        print(f"wrote {path}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace, Settings], int], str, str]] = {
    "check": (
        check,
        "report every problem of the rule files as file:line:col: message",
        "Check every rule file, policy.yaml and rules/tests/*.yaml in DIR (default:\n"
        "rules_dir): YAML syntax, unknown keys, types, durations, CEL syntax and\n"
        "types, event types, profile fields, channels, duplicate ids. Prints every\n"
        "problem of every file; exits 1 if there is any.",
    ),
    "test": (
        test,
        "run rules/tests/*.yaml: given these events, expect these decisions",
        "Run each test file in DIR/tests against the rules in DIR on a simulated\n"
        "clock, through the same engine code as production. Exits 1 if any fails.",
    ),
    "dry-run": (
        dry_run,
        "replay history through the rules and report what they would have done",
        "Replay recorded events (a file as `pulse replay` reads it, or `topic` for the\n"
        "events topic) through the rules in DIR with a simulated clock; nothing is\n"
        "sent. Reports per rule what would fire, what each guard suppressed, what\n"
        "was held out, with sample customers. Example, on the UCI Online Retail data:\n"
        "  pulse rules dry-run win_back replenishment tier_upgrade \\\n"
        "    --from ../shared/data/online-retail/online_retail_non_uk.csv \\\n"
        "    --preset online-retail --contactable",
    ),
    "deploy": (
        deploy,
        "validate the rules and publish them as the new version",
        "Validate DIR and publish it as a new rule version on the control topic;\n"
        "the running dataflow switches without a restart, every worker at the\n"
        "same point of the stream (rules_activation_s after publishing). An\n"
        "invalid set is refused and the running version stays.",
    ),
    "rollback": (
        rollback,
        "deploy the previous version again",
        "Publish the version in force before the current one as a new deployment:\n"
        "the previous deployment, or before the first one the rules of rules_dir.\n"
        "Like deploy, it applies from a few seconds after publishing.",
    ),
    "versions": (
        versions,
        "list deployed versions and the one in force",
        "List every rule version deployed on the control topic.",
    ),
    "schema": (
        schema,
        "write the JSON Schemas of rule, policy and test files",
        "Write rule.schema.json, policy.schema.json and rule-test.schema.json to\n"
        "--out (default docs/) for editors' autocompletion.",
    ),
}


def add_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = sub.add_parser(
        "rules",
        help="check, test, dry-run, deploy and roll back trigger rules",
        description=__doc__,
        formatter_class=formatter,
    )
    actions = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    for name, (func, help_, description) in COMMANDS.items():
        p = actions.add_parser(name, help=help_, description=description, formatter_class=formatter)
        p.set_defaults(rules_func=func)
        if name not in ("rollback", "versions", "schema", "dry-run"):
            p.add_argument(
                "dir", nargs="?", metavar="DIR", help="rule directory (default: rules_dir)"
            )
        if name == "test":
            p.add_argument("-k", metavar="TEXT", help="only tests whose name or file contains TEXT")
            p.add_argument(
                "--verbose", action="store_true", help="list every decision of a failing test"
            )
        if name == "dry-run":
            p.set_defaults(dir=None)
            p.add_argument(
                "rules", nargs="*", metavar="RULE", help="rules to report (default: all)"
            )
            p.add_argument("--dir", help="rule directory (default: rules_dir)")
            p.add_argument(
                "--from",
                dest="source",
                required=True,
                metavar="FILE|topic",
                help="a file (JSON lines, CSV with --mapping or --preset) or `topic`",
            )
            p.add_argument("--format", choices=["auto", "jsonl", "csv"], default="auto")
            p.add_argument(
                "--mapping", metavar="TOML", help="CSV column mapping (see pulse replay)"
            )
            p.add_argument("--preset", choices=["online-retail"], help="a built-in CSV conversion")
            p.add_argument("--since", metavar="TIME", help="report decisions from this time on")
            p.add_argument("--until", metavar="TIME", help="stop the replay at this time")
            p.add_argument(
                "--samples", type=int, default=5, help="sample customers per outcome (5)"
            )
            p.add_argument(
                "--contactable",
                action="store_true",
                help="count every customer as reachable and consenting (history "
                "without consent records or addresses)",
            )
            p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
        if name in ("deploy", "rollback"):
            p.add_argument(
                "--wait",
                action="store_true",
                help="wait until the running dataflow reports the new version",
            )
        if name == "deploy":
            p.add_argument("--force", action="store_true", help="deploy even if unchanged")
        if name == "schema":
            p.add_argument("--out", default="docs", help="output directory (docs)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        code: int = args.rules_func(args, settings)
        return code
    except RulesFileError as exc:
        print(f"pulse rules: {exc}", file=sys.stderr)
        return 2
