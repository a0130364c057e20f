"""Rule files to a compiled rule set, or every problem with its file, line and column.

One pass over all files reports everything a marketer needs to fix: YAML
syntax, unknown keys, wrong types and durations (``engine.rules.yamlcheck``),
then what only makes sense with the whole rule in view: the trigger kind, event
types, profile attributes, CEL syntax and types (``engine.rules.celcheck``),
duplicate ids. Only a set without errors compiles.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
import msgspec

from engine.events import EVENT_TYPE_NAMES
from engine.rules import celcheck, yamlcheck
from engine.rules.celtypes import BOOL, DOUBLE, INT, STRING, CelType, MapType
from engine.rules.context import (
    FUNCTIONS,
    GETTERS,
    MAP_KEYS,
    PROFILE_FIELDS,
    STATE_FIELDS,
    cel_literal,
    environment,
    flat_name,
    getter_for,
    map_key_getter,
)
from engine.rules.durations import parse_duration, parse_time_of_day
from engine.rules.model import Policy, Rule
from engine.rules.ruleset import (
    CUSTOMER_ACTIVITY,
    AttributeTrigger,
    CompiledRule,
    DateTrigger,
    EventTrigger,
    Expression,
    InactivityTrigger,
    RuleSet,
    TriggerKind,
)
from engine.rules.yamlcheck import Document, Problem

# A constant key read on a map (not a method call): `.email` of profile.traits.email.
_MAP_KEY = re.compile(
    r"\s*(?:\.\s*(?P<dot>[A-Za-z_][A-Za-z0-9_]*)(?!\s*\()"
    r"|\[\s*(?P<q>[\"'])(?P<quoted>[A-Za-z_][A-Za-z0-9_]*)(?P=q)\s*\])"
)
_HAS_OPEN = re.compile(r"\bhas\s*\(\s*$")
_HAS_CLOSE = re.compile(r"\s*\)")

POLICY_FILE = "policy.yaml"
# Files in rules/ that are not trigger rules.
NOT_RULES = frozenset({POLICY_FILE, "loyalty.yaml", "rfm.yaml", "actions.yaml"})

Path = tuple[str | int, ...]


@dataclass
class Loaded:
    """The outcome of loading a rule directory's texts."""

    rules: RuleSet | None  # None when there was any error
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rules is not None


def rule_set_files(files: Mapping[str, str]) -> dict[str, str]:
    """The files that make a rule version (rules and the policy), by base name.

    loyalty.yaml and rfm.yaml shape profiles, are read by each process at
    start-up and are not part of a version (nor of a deployment).
    """
    return {
        base_name(name): text
        for name, text in files.items()
        if base_name(name) == POLICY_FILE or base_name(name) not in NOT_RULES
    }


def version_of(files: Mapping[str, str]) -> str:
    """A short content hash of the rule set: the same rules give the same
    version in check, dry-run, the API, the dataflow and deployments."""
    digest = hashlib.sha256()
    for name, text in sorted(rule_set_files(files).items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:12]


def load(files: Mapping[str, str]) -> Loaded:
    """Check and compile rule files (name -> text); ``policy.yaml`` among them is the policy.

    Names are the files' names as the marketer knows them (used in messages).
    """
    problems: list[Problem] = []
    policy = Policy()
    for name, text in files.items():
        if base_name(name) == POLICY_FILE:
            found, policy_problems = _policy(name, text)
            problems += policy_problems
            policy = found or policy
    compiled: list[CompiledRule] = []
    seen: dict[str, tuple[str, tuple[int, int]]] = {}
    for name in sorted(files):
        if base_name(name) in NOT_RULES:
            continue
        result = _rule(name, files[name])
        problems += result.problems
        if result.rule is None:
            continue
        rule = result.rule.rule
        if rule.id in seen:
            other, _mark = seen[rule.id]
            line, col = result.id_mark
            problems.append(
                Problem(name, line, col, f"rule id `{rule.id}` is already used by {other}")
            )
            continue
        seen[rule.id] = (name, result.id_mark)
        compiled.append(result.rule)
    problems.sort()
    if problems:
        return Loaded(None, problems)
    return Loaded(RuleSet.build(version_of(files), compiled, policy, dict(files)), [])


def base_name(name: str) -> str:
    """A file's name without its directory: how rule sets name their files."""
    return name.replace("\\", "/").rsplit("/", 1)[-1]


# Policy --------------------------------------------------------------------------------


def _policy(name: str, text: str) -> tuple[Policy | None, list[Problem]]:
    doc, problems = yamlcheck.parse(text, name)
    if doc is None:
        return None, problems
    problems += yamlcheck.check(doc, Policy, name)
    if problems:
        return None, problems
    policy = yamlcheck.to_struct(doc, Policy)
    try:
        ZoneInfo(policy.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        line, col = doc.mark(("timezone",))
        problems.append(
            Problem(
                name, line, col, f"unknown time zone {policy.timezone!r}: use e.g. Europe/London"
            )
        )
    return policy, problems


# One rule ----------------------------------------------------------------------------


@dataclass
class _RuleResult:
    rule: CompiledRule | None
    problems: list[Problem]
    id_mark: tuple[int, int] = (1, 1)


class _Checker:
    """Semantic checks and compilation of one parsed rule, collecting problems."""

    def __init__(self, name: str, doc: Document, rule: Rule) -> None:
        self.name = name
        self.doc = doc
        self.rule = rule
        self.problems: list[Problem] = []
        self.paths: list[Path] = []  # where each problem is, in the document

    def problem(self, path: Path, message: str, key: bool = False) -> None:
        line, col = self.doc.key_mark(path) if key else self.doc.mark(path)
        self.problems.append(Problem(self.name, line, col, message))
        self.paths.append(path)

    # Expressions

    def expression(
        self,
        path: Path,
        source: str,
        event_types: tuple[str, ...] | None,
        expect: CelType | None = BOOL,
    ) -> Expression | None:
        env = environment(event_types, self.rule.params, with_item=event_types is not None)
        checked = celcheck.check(source, env, expect)
        for p in checked.problems:
            line, col = self.doc.locate(path, p.offset)
            self.problems.append(Problem(self.name, line, col, p.message))
            self.paths.append(path)
        if checked.problems or event_types == ():
            return None  # (no valid event type: a problem reported elsewhere)
        return self._compile(path, source, checked)

    def _compile(self, path: Path, source: str, checked: celcheck.Checked) -> Expression | None:
        """Rewrite every profile/event/... field read into a flat variable, and
        inline the rule's constants (see engine.rules.context)."""
        needs: list[str] = []
        parts: list[str] = []
        last = 0
        unknown = False
        for ref in checked.references:
            start, end = ref.start, ref.end
            if ref.root == "rule" and ref.path[:1] == ("params",):
                text = self._param_literal(ref.path[1:])
            elif ref.root == "rule" and ref.path == ("id",):
                text = cel_literal(self.rule.id)
            elif isinstance(ref.type, MapType) and (key := _MAP_KEY.match(source, end)):
                # profile.traits.email reads one value, has(profile.traits.email)
                # one boolean: a flat variable each instead of the whole map.
                before = _HAS_OPEN.search(source, 0, start)
                after = _HAS_CLOSE.match(source, key.end())
                test = before is not None and after is not None and before.end() == start
                key_name = key.group("dot") or key.group("quoted")
                key_at = key.start("dot") if key.group("dot") else key.start("quoted")
                known = MAP_KEYS.get(ref.path) if ref.root == "profile" else None
                if known is not None and key_name not in known:
                    self._unknown_key(path, source, key_at, ref.path, key_name, known)
                    unknown = True
                name = map_key_getter(ref.root, ref.path, key_name, test)
                if test:
                    assert before is not None and after is not None
                    start, end = before.start(), after.end()
                else:
                    end = key.end()
                needs.append(name)
                text = name
            else:
                name = flat_name(ref.root, ref.path)
                getter_for(ref.root, ref.path)  # registers event paths
                needs.append(name)
                text = name
            parts.append(source[last:start])
            parts.append(text)
            last = end
        parts.append(source[last:])
        if unknown:
            return None
        rewritten = "".join(parts)
        try:
            program = cel.compile(rewritten)
        except ValueError as exc:  # the checker accepted it: a bug of ours, say so plainly
            self.problem(path, f"internal error compiling this expression: {exc}")
            return None
        calls = set(program.functions()) & set(FUNCTIONS)
        direct = len(needs) == 1 and rewritten.strip() == needs[0]
        return Expression(source, program, tuple(dict.fromkeys(needs)), bool(calls), direct)

    def _unknown_key(
        self,
        path: Path,
        source: str,
        offset: int,
        where: tuple[str, ...],
        key: str,
        known: tuple[str, ...],
    ) -> None:
        """A key the profile map can never hold (a misspelt trait, say)."""
        line, col = self.doc.locate(path, offset)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else "it holds " + ", ".join(known)
        field = ".".join(("profile", *where))
        self.problems.append(
            Problem(self.name, line, col, f"`{field}` never holds `{key}`; {hint}")
        )
        self.paths.append(path)

    def _param_literal(self, path: tuple[str, ...]) -> str:
        value: Any = self.rule.params
        for part in path:
            value = value[part]
        return cel_literal(value)

    # Parts of the rule

    def event_types(self, path: Path, value: str | list[str]) -> tuple[str, ...]:
        names = [value] if isinstance(value, str) else list(value)
        good = []
        for i, name in enumerate(names):
            where = path if isinstance(value, str) else (*path, i)
            if name in EVENT_TYPE_NAMES:
                good.append(name)
            else:
                close = difflib.get_close_matches(name, EVENT_TYPE_NAMES, n=1)
                hint = f"; did you mean `{close[0]}`?" if close else " (see docs/events.md)"
                self.problem(where, f"unknown event type `{name}`{hint}")
        if not names:
            self.problem(path, "name at least one event type")
        return tuple(good)

    def duration(self, path: Path, text: str, positive: bool = True) -> float:
        seconds = parse_duration(text)  # the pattern was checked already
        if positive and seconds <= 0:
            self.problem(path, "must be longer than zero")
        return seconds

    def trigger(self) -> tuple[TriggerKind | None, tuple[str, ...] | None]:
        """The trigger kind, and the event types ``event`` can be in conditions."""
        t = self.rule.trigger
        kinds = [k for k in ("event", "inactive_for", "attribute", "date") if getattr(t, k)]
        if len(kinds) != 1:
            found = ", ".join(f"`{k}`" for k in kinds) or "none"
            self.problem(
                ("trigger",),
                "a trigger needs exactly one of `event`, `inactive_for`, `attribute` or `date` "
                f"(found {found})",
            )
            return None, None
        kind = kinds[0]
        allowed = {
            "event": {"event", "when"},
            "inactive_for": {"inactive_for", "activity"},
            "attribute": {"attribute", "change", "above", "below"},
            "date": {"date", "at", "before", "yearly"},
        }[kind]
        for key in ("when", "activity", "change", "above", "below", "at", "before", "yearly"):
            if getattr(t, key) is not None and key not in allowed:
                self.problem(
                    ("trigger", key),
                    f"`{key}` does not apply to a `{kind}` trigger",
                    key=True,
                )
        if kind == "event":
            assert t.event is not None
            types = self.event_types(("trigger", "event"), t.event)
            when = None
            if t.when is not None:
                when = self.expression(("trigger", "when"), t.when, types)
            return EventTrigger(frozenset(types), when), types
        if kind == "inactive_for":
            assert t.inactive_for is not None
            after = self.duration(("trigger", "inactive_for"), t.inactive_for)
            activity = (
                self.event_types(("trigger", "activity"), t.activity)
                if t.activity is not None
                else tuple(sorted(CUSTOMER_ACTIVITY))
            )
            return InactivityTrigger(after, frozenset(activity)), activity
        if kind == "attribute":
            return self.attribute_trigger(), tuple(EVENT_TYPE_NAMES)
        return self.date_trigger(), None

    def attribute_trigger(self) -> AttributeTrigger | None:
        t = self.rule.trigger
        assert t.attribute is not None
        name = t.attribute.removeprefix("profile.")
        field_type = PROFILE_FIELDS.get(name, (None,))[0]
        if field_type not in (INT, DOUBLE, STRING):
            choices = [k for k, v in PROFILE_FIELDS.items() if v[0] in (INT, DOUBLE, STRING)]
            close = difflib.get_close_matches(name, choices, n=1)
            hint = (
                f"did you mean `{close[0]}`?" if close else "one of " + ", ".join(sorted(choices))
            )
            self.problem(
                ("trigger", "attribute"),
                f"`{name}` is not a profile attribute a trigger can watch; {hint}",
            )
            return None
        modes = [k for k in ("change", "above", "below") if getattr(t, k) is not None]
        if len(modes) > 1:
            self.problem(("trigger",), "use one of `change`, `above` or `below`, not several")
        if field_type == STRING and (t.above is not None or t.below is not None):
            self.problem(
                ("trigger", "attribute"), f"`{name}` is text: use `change`, not a threshold"
            )
        if field_type == STRING and t.change in ("up", "down") and name != "tier":
            self.problem(
                ("trigger", "change"), f"`{name}` is text with no order: use `change: any`"
            )
        direct = name if name in STATE_FIELDS else None
        return AttributeTrigger(
            name, t.change, t.above, t.below, getter_for("profile", (name,)), direct
        )

    def date_trigger(self) -> DateTrigger | None:
        t = self.rule.trigger
        assert t.date is not None
        path = tuple(t.date.removeprefix("profile.").split("."))
        head = PROFILE_FIELDS.get(path[0], (None,))[0]
        valid = (isinstance(head, MapType) and head.value == STRING and len(path) == 2) or (
            head == DOUBLE and len(path) == 1 and path[0].endswith("_at")
        )
        if not valid:
            dates = sorted(
                k for k, v in PROFILE_FIELDS.items() if v[0] == DOUBLE and k.endswith("_at")
            )
            self.problem(
                ("trigger", "date"),
                f"`{t.date}` is not a date attribute: use traits.<name> (e.g. traits.birthday) "
                f"or one of {', '.join(dates)}",
            )
            return None
        at = parse_time_of_day(t.at) if t.at else 9 * 60
        before = self.duration(("trigger", "before"), t.before, positive=False) if t.before else 0.0
        if len(path) == 2:
            read = GETTERS[map_key_getter("profile", path[:1], path[1], test=False)]
            changed_by = frozenset({"identify"})
        else:
            read = getter_for("profile", path)
            # (an identify may change the time zone the date is read in)
            changed_by = frozenset(
                {"identify", "order_placed", "order_refunded", "loyalty_points_adjusted"}
            )
        return DateTrigger(path, at, before, t.yearly, read, changed_by)

    def compile(self) -> CompiledRule | None:
        rule = self.rule
        trigger, event_types = self.trigger()
        wait_s: float | None = None
        wait_days: Expression | None = None
        cancel: dict[str, tuple[Expression | None, ...]] = {}
        if rule.wait is not None:
            w = rule.wait
            if (w.for_ is None) == (w.for_days is None):
                self.problem(("wait",), "a wait needs exactly one of `for` or `for_days`")
            elif w.for_ is not None:
                wait_s = self.duration(("wait", "for"), w.for_)
            elif w.for_days is not None:
                wait_days = self.expression(("wait", "for_days"), w.for_days, event_types, None)
            for i, c in enumerate(w.cancel_on):
                types = self.event_types(("wait", "cancel_on", i, "event"), c.event)
                when = (
                    self.expression(("wait", "cancel_on", i, "when"), c.when, types)
                    if c.when is not None
                    else None
                )
                for t in types:
                    cancel[t] = (*cancel.get(t, ()), when)
        conditions = tuple(
            e
            for i, source in enumerate(rule.conditions)
            if (e := self.expression(("conditions", i), source, event_types)) is not None
        )
        payload = tuple(
            (key, e)
            for key, source in rule.action.payload.items()
            if (e := self.expression(("action", "payload", key), source, event_types, None))
            is not None
        )
        goal_types: frozenset[str] = frozenset()
        goal_when = None
        goal_within = 0.0
        if rule.goal is not None:
            goal_types = frozenset(self.event_types(("goal", "event"), rule.goal.event))
            if rule.goal.when is not None:
                goal_when = self.expression(("goal", "when"), rule.goal.when, tuple(goal_types))
            goal_within = self.duration(("goal", "within"), rule.goal.within)
        active_from, active_until = -math.inf, math.inf
        if rule.active is not None:
            if rule.active.from_ is not None:
                active_from = self.instant(("active", "from"), rule.active.from_)
            if rule.active.until is not None:
                active_until = self.instant(("active", "until"), rule.active.until)
            if active_from >= active_until:
                self.problem(("active",), "`from` must be before `until`")
        for key, value in rule.params.items():
            try:
                cel_literal(value)
            except ValueError as exc:
                self.problem(("params", key), f"`{key}` cannot be used in expressions: {exc}")
        if self.problems or trigger is None:
            return None
        return CompiledRule(
            rule=rule,
            trigger=trigger,
            wait_s=wait_s,
            wait_days=wait_days,
            restart=rule.wait.restart if rule.wait is not None else True,
            cancel=cancel,
            conditions=conditions,
            payload=payload,
            deadline_s=self.duration(("action", "deadline"), rule.action.deadline),
            once_per_s=parse_duration(rule.limits.once_per) if rule.limits.once_per else None,
            max_entries=rule.limits.max_entries,
            holdout=rule.holdout / 100.0,
            goal_types=goal_types,
            goal_when=goal_when,
            goal_within_s=goal_within,
            active_from=active_from,
            active_until=active_until,
        )

    def instant(self, path: Path, text: str) -> float:
        value = parse_instant(text)
        if value is None:
            self.problem(
                path, f"bad time {text!r}: use a date (2026-12-01) or 2026-12-01T09:00:00Z"
            )
            return math.nan
        return value


def parse_instant(text: str) -> float | None:
    """Epoch seconds of a date (midnight UTC) or an RFC 3339 time; None if neither."""
    try:
        parsed = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _rule(name: str, text: str) -> _RuleResult:
    doc, problems = yamlcheck.parse(text, name)
    if doc is None:
        return _RuleResult(None, problems)
    problems += yamlcheck.check(doc, Rule, name)
    # With problems in the file's structure, the rest is still checked (CEL,
    # event types, ...) on what is valid, so one round of fixes is enough.
    dropped: list[Path] = []
    rule = yamlcheck.to_struct(doc, Rule) if not problems else _lenient(doc.value, dropped)
    if rule is None:
        return _RuleResult(None, problems)
    checker = _Checker(name, doc, rule)
    stem = base_name(name).rsplit(".", 1)[0]
    if stem != rule.id:
        checker.problem(
            ("id",),
            f"the rule's id is `{rule.id}` but the file is {base_name(name)}: "
            f"name it {rule.id}.yaml",
        )
    compiled = checker.compile()
    if problems:
        # Not the same spot twice: a missing or invalid value stands in as a
        # placeholder for these checks, and its own problem says it all.
        lines = {p.line for p in problems}
        problems += [
            p
            for p, where in zip(checker.problems, checker.paths, strict=True)
            if p.line not in lines and not any(_related(where, d) for d in dropped)
        ]
        return _RuleResult(None, problems)
    return _RuleResult(compiled, checker.problems, doc.mark(("id",)))


# What stands in for a required value that is missing or invalid, so the rest
# of a rule can still be checked.
_PLACEHOLDERS: dict[str, Any] = {
    "id": "placeholder",
    "trigger": {},
    "action": {"channel": "email", "template": "-"},
    "channel": "email",
    "template": "-",
    "event": "identify",
}
_ERROR_PATH = re.compile(r" - at `\$([^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")
_UNKNOWN = re.compile(r"^Object contains unknown field `([^`]+)`")


def _related(a: Path, b: Path) -> bool:
    """One path lies within the other."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _lenient(value: Any, dropped: list[Path]) -> Rule | None:
    """A Rule from a value with problems: invalid parts dropped, required ones
    filled with placeholders (their paths go to ``dropped``). None when that
    does not converge."""
    data = copy.deepcopy(value)
    if not isinstance(data, dict):
        return None
    for _ in range(100):
        try:
            return msgspec.convert(data, Rule, strict=False)
        except msgspec.ValidationError as exc:
            message = str(exc)
            located = _ERROR_PATH.search(message)
            path = _parse_path(located.group(1)) if located else []
            missing, unknown = _MISSING.match(message), _UNKNOWN.match(message)
            parent = _get(data, path)
            if missing and isinstance(parent, dict) and missing.group(1) in _PLACEHOLDERS:
                parent[missing.group(1)] = copy.deepcopy(_PLACEHOLDERS[missing.group(1)])
                dropped.append((*path, missing.group(1)))
            elif unknown and isinstance(parent, dict):
                parent.pop(unknown.group(1), None)
            elif path and not missing:
                dropped.append(tuple(path))
                container = _get(data, path[:-1])
                if isinstance(container, dict):
                    container.pop(path[-1], None)
                elif isinstance(container, list) and isinstance(path[-1], int):
                    container.pop(path[-1])
                else:
                    return None
            else:
                return None
    return None


def _parse_path(text: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return parts


def _get(data: Any, path: list[str | int]) -> Any:
    for part in path:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if in_dict or in_list:
            data = data[part]
        else:
            return None
    return data
