"""Rule tests: "given these events at these times, expect these decisions".

A marketer writes ``rules/tests/<name>.yaml`` next to the rules; ``pulse
rules test`` and pytest run each on a simulated clock through the same engine
code as production, so a passing test means the rule behaves so live.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.customer import Engine
from engine.decode import event_decoder
from engine.events import BaseEvent
from engine.loyalty import DEFAULT_PROGRAM, LoyaltyProgram
from engine.rules import yamlcheck
from engine.rules.durations import format_duration, parse_duration
from engine.rules.model import Expected, RuleTest
from engine.rules.ruleset import RuleSet
from engine.rules.simulate import Simulation
from engine.rules.validate import parse_instant
from engine.rules.yamlcheck import Problem
from engine.triggers import Decision

DEFAULT_OUTCOMES = (
    "fired",
    "suppressed",
    "held_out",
    "deferred",
    "cancelled",
    "exited",
    "converted",
    "error",
)


@dataclass
class TestCase:
    file: str
    test: RuleTest
    start: float
    events: list[BaseEvent]
    expected: list[tuple[float, Expected]]
    until: float


@dataclass
class TestResult:
    file: str
    name: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


def parse(text: str, file: str) -> tuple[TestCase | None, list[Problem]]:
    """A test file, or every problem in it."""
    doc, problems = yamlcheck.parse(text, file)
    if doc is None:
        return None, problems
    problems += yamlcheck.check(doc, RuleTest, file)
    if problems:
        return None, problems
    test = yamlcheck.to_struct(doc, RuleTest)

    def problem(path: tuple[str | int, ...], message: str) -> None:
        line, col = doc.mark(path)
        problems.append(Problem(file, line, col, message))

    start = parse_instant(test.start)
    if start is None:
        problem(("start",), f"bad time {test.start!r}: use e.g. 2026-03-02T10:00:00Z")
        return None, problems

    def when(path: tuple[str | int, ...], text: str) -> float:
        value = _time(text, start)
        if value is None:
            problem(path, f"bad time {text!r}: use +30m (after start) or an RFC 3339 time")
            return start
        return value

    events = []
    for i, raw in enumerate(test.events):
        fields = dict(raw)
        at = when(("events", i, "at"), str(fields.pop("at", "+0s")))
        if "customer" in fields:
            fields["customer_id"] = fields.pop("customer")
        fields.setdefault("event_id", f"{test.name}-{i + 1}")
        fields["timestamp"] = dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat()
        try:
            events.append(event_decoder.decode(msgspec.json.encode(fields)))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            problem(("events", i), f"event {i + 1} is not a valid event: {exc}")
    expected = [(when(("expect", i, "at"), e.at), e) for i, e in enumerate(test.expect)]
    last = max([start, *(e.ts for e in events), *(t for t, _ in expected)])
    until = when(("until",), test.until) if test.until else last + 86400.0
    if problems:
        return None, problems
    return TestCase(file, test, start, events, expected, until), []


def _time(text: str, start: float) -> float | None:
    text = text.strip()
    if text.startswith("+"):
        try:
            return start + parse_duration(text[1:])
        except ValueError:
            return None
    return parse_instant(text)


def run(case: TestCase, rules: RuleSet, loyalty: LoyaltyProgram = DEFAULT_PROGRAM) -> TestResult:
    """Run one test against a rule set."""
    test = case.test
    if test.contactable:
        rules = rules.assuming_contactable()
    unknown = sorted(set(test.rules) - set(rules.by_id))
    if unknown:
        return TestResult(case.file, test.name, False, [f"unknown rule(s): {', '.join(unknown)}"])
    simulation = Simulation(Engine(rules, loyalty=loyalty))
    outcomes = set(test.outcomes or DEFAULT_OUTCOMES)
    wanted = set(test.rules or rules.by_id)
    decisions = [
        d
        for d in simulation.run(case.events, until=case.until)
        if isinstance(d, Decision) and d.outcome in outcomes and d.rule_id in wanted
    ]
    failures = compare(case, decisions)
    return TestResult(case.file, test.name, not failures, failures, decisions)


def compare(case: TestCase, decisions: list[Decision]) -> list[str]:
    """Differences between expected and actual decisions, in plain words."""
    failures = []
    for i, (at, want) in enumerate(case.expected):
        got = decisions[i] if i < len(decisions) else None
        if got is None:
            failures.append(
                f"expected {_describe_expected(case, at, want)}, but nothing more happened"
            )
        elif not _matches(at, want, got):
            failures.append(
                f"decision {i + 1}: expected {_describe_expected(case, at, want)}, "
                f"got {describe(case.start, got)}"
            )
    for got in decisions[len(case.expected) :]:
        failures.append(f"unexpected {describe(case.start, got)}")
    return failures


def _matches(at: float, want: Expected, got: Decision) -> bool:
    return (
        abs(got.at - at) < 1e-6
        and got.rule_id == want.rule
        and got.outcome == want.outcome
        and (want.customer is None or got.customer_id == want.customer)
        and (want.reason is None or got.reason == want.reason)
        and (want.channel is None or got.channel == want.channel)
    )


def _offset(start: float, at: float) -> str:
    delta = at - start
    return f"+{format_duration(delta)}" if delta >= 0 else f"-{format_duration(-delta)}"


def _describe_expected(case: TestCase, at: float, want: Expected) -> str:
    parts: list[Any] = [_offset(case.start, at), want.rule, want.outcome]
    if want.reason:
        parts.append(f"({want.reason})")
    if want.customer:
        parts.append(f"for {want.customer}")
    if want.channel:
        parts.append(f"on {want.channel}")
    return " ".join(str(p) for p in parts)


def describe(start: float, d: Decision) -> str:
    text = f"{_offset(start, d.at)} {d.rule_id} {d.outcome}"
    if d.reason:
        text += f" ({d.reason})"
    text += f" for {d.customer_id}"
    if d.channel:
        text += f" on {d.channel}"
    return text
