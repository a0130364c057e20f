"""Compiled rules: everything parsed once per rule-set version, indexed by event type.

Evaluating the whole rule set on an event must cost a few microseconds, so
the work per event is a dictionary lookup of the rules that care about its
type plus the CEL programs those rules actually need; durations, times and
expressions are parsed here, once.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.events import EVENT_TYPE_NAMES
from engine.rules.context import Getter, Scope
from engine.rules.guards import Guard, guards_for
from engine.rules.model import Policy, Rule

# Functions beyond CEL's standard ones (typed in engine.rules.context.FUNCTIONS).
EXTRA_FUNCTIONS: dict[str, Any] = {"min": min, "max": max}

# Events that are the customer's own doing, for inactivity triggers by default:
# message events come from Pulse's own sends and must not count as activity.
CUSTOMER_ACTIVITY = frozenset(t for t in EVENT_TYPE_NAMES if not t.startswith("message_"))


_MEMO_SIZE = 4096


@dataclass(frozen=True)
class Expression:
    """A CEL expression compiled against the flat context (engine.rules.context).

    CEL is pure, so a result depends only on the values the expression reads:
    results are remembered per input values, and most events (a page view of a
    customer whose postcode was already looked at) cost a dictionary lookup
    instead of a trip through the interpreter, which converts every input anew.
    """

    source: str  # as the marketer wrote it
    program: Any  # cel.Program
    needs: tuple[str, ...]  # the flat variables it reads
    functions: bool = False  # calls Pulse's extra functions (min, max)
    # The expression is one variable and nothing else (a payload's ``cart.items``):
    # its value is the result, with no trip through the interpreter, which would
    # convert a list of maps element by element only to hand it back.
    direct: bool = False
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, compare=False, repr=False)

    def evaluate(self, scope: Scope) -> Any:
        """The result for this scope; CEL errors raise (ValueError, TypeError, ...)."""
        if self.direct:
            return scope.value(self.needs[0])
        inputs = scope.inputs(self.needs)
        key: tuple[Any, ...] = inputs
        memo = self._memo
        try:
            return memo[key]
        except KeyError:
            pass
        except TypeError:  # an input is a list or a map: remembered by a frozen copy
            try:
                key = tuple([_frozen(v) for v in inputs])
                if key in memo:
                    return memo[key]
            except TypeError:  # something else unhashable in it: not remembered
                return self._execute(inputs)
        result = self._execute(inputs)
        remember(memo, key, result)
        return result

    def _execute(self, inputs: tuple[Any, ...]) -> Any:
        values = dict(zip(self.needs, inputs, strict=True))
        if self.functions:
            values.update(EXTRA_FUNCTIONS)
        return self.program.execute(values)


def remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    """Keep ``value`` under ``key`` in a memo of results, bounded: a full memo
    is cleared rather than evicted item by item (the values that repeat are
    back within a few events)."""
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value


class _Frozen(tuple[Any, ...]):
    """A list or map input as a memo key: its type and its elements in order."""

    __slots__ = ()


def _frozen(value: Any) -> Any:
    """A hashable stand-in for an input that holds the same values: containers by
    type and content in order (a map's order can show in a result), and inside
    them each value with its type (CEL tells 1, 1.0 and true apart) and a float
    by its bits."""
    if isinstance(value, list | tuple):
        for v in value:
            if type(v) is not str:
                return _Frozen((list, *[_frozen_item(v) for v in value]))
        return _Frozen((list, str, *value))  # the common case: a list of strings
    if isinstance(value, dict):
        return _Frozen((dict, *[(_frozen_item(k), _frozen_item(v)) for k, v in value.items()]))
    return value


def _frozen_item(value: Any) -> Any:
    if isinstance(value, list | tuple | dict):
        return _frozen(value)
    if isinstance(value, float):  # -0.0 == 0.0, yet CEL may print them apart
        return (float, value.hex())
    return (type(value), value)


@dataclass(frozen=True)
class EventTrigger:
    types: frozenset[str]
    when: Expression | None


@dataclass(frozen=True)
class InactivityTrigger:
    after_s: float
    activity: frozenset[str]


@dataclass(frozen=True)
class AttributeTrigger:
    attribute: str  # a profile field
    change: str | None  # up, down, any
    above: float | None
    below: float | None
    read: Getter  # the field's value in a scope
    field: str | None = None  # the CustomerState attribute, when it is one as it is


@dataclass(frozen=True)
class DateTrigger:
    attribute: tuple[str, ...]  # e.g. ("traits", "birthday") or ("points_expire_at",)
    at_minute: int  # local minute of day
    before_s: float
    yearly: bool | None  # None: yearly for month-day dates, once for instants
    read: Getter  # the attribute's value in a scope
    # The event types that can change the attribute: only they make a customer
    # with a pending date look at it again.
    changed_by: frozenset[str]


TriggerKind = EventTrigger | InactivityTrigger | AttributeTrigger | DateTrigger


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    trigger: TriggerKind
    wait_s: float | None = None
    wait_days: Expression | None = None
    restart: bool = True
    cancel: dict[str, tuple[Expression | None, ...]] = field(default_factory=dict)
    conditions: tuple[Expression, ...] = ()
    payload: tuple[tuple[str, Expression], ...] = ()
    deadline_s: float = 86400.0
    once_per_s: float | None = None
    max_entries: int | None = None
    holdout: float = 0.0  # share, 0..1
    goal_types: frozenset[str] = frozenset()
    goal_when: Expression | None = None
    goal_within_s: float = 0.0
    active_from: float = -math.inf
    active_until: float = math.inf

    id: str = field(init=False)  # the rule's id, read on every event: a field, not a lookup
    waits: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", self.rule.id)
        object.__setattr__(self, "waits", self.wait_s is not None or self.wait_days is not None)

    def active_at(self, ts: float) -> bool:
        return self.active_from <= ts < self.active_until


@dataclass(frozen=True)
class Plan:
    """What one event type concerns in a rule set, looked up once per event."""

    goals: tuple[CompiledRule, ...] = ()
    cancels: tuple[CompiledRule, ...] = ()
    enters: tuple[CompiledRule, ...] = ()  # rules with an event trigger on this type
    activity: tuple[tuple[str, float], ...] = ()  # inactivity triggers it resets
    dates: tuple[CompiledRule, ...] = ()  # date triggers whose date it may change
    evaluates: bool = field(init=False)  # goals, cancels or entries: a scope is needed

    def __post_init__(self) -> None:
        object.__setattr__(self, "evaluates", bool(self.goals or self.cancels or self.enters))


EMPTY_PLAN = Plan()


@dataclass(frozen=True)
class RuleSet:
    """One version of the rules and the policy, indexed for the hot path."""

    version: str
    rules: tuple[CompiledRule, ...]  # enabled rules, highest priority first
    policy: Policy
    guards: tuple[Guard, ...]
    by_id: dict[str, CompiledRule]
    attribute_rules: tuple[CompiledRule, ...]
    date_rules: tuple[CompiledRule, ...]
    watched: tuple[AttributeTrigger, ...]  # what attribute triggers compare, one per attribute
    plans: dict[str, Plan]  # per event type
    files: dict[str, str] = field(default_factory=dict)  # file name -> text, for deploys
    # Dry-runs over history without consent records or addresses: every customer
    # counts as reachable on every channel and consenting to it.
    contactable: bool = False

    def assuming_contactable(self) -> RuleSet:
        return dataclasses.replace(
            self, guards=guards_for(self.policy, contactable=True), contactable=True
        )

    @classmethod
    def build(
        cls,
        version: str,
        rules: Iterable[CompiledRule],
        policy: Policy,
        files: dict[str, str] | None = None,
    ) -> RuleSet:
        enabled = sorted(
            (r for r in rules if r.rule.enabled), key=lambda r: (-r.rule.priority, r.id)
        )
        by_event: dict[str, list[CompiledRule]] = {}
        cancels: dict[str, list[CompiledRule]] = {}
        goals: dict[str, list[CompiledRule]] = {}
        activity: dict[str, list[tuple[str, float]]] = {}
        dates: dict[str, list[CompiledRule]] = {}
        for r in enabled:
            trigger = r.trigger
            if isinstance(trigger, EventTrigger):
                for t in trigger.types:
                    by_event.setdefault(t, []).append(r)
            elif isinstance(trigger, InactivityTrigger):
                for t in trigger.activity:
                    activity.setdefault(t, []).append((r.id, trigger.after_s))
            elif isinstance(trigger, DateTrigger):
                for t in trigger.changed_by:
                    dates.setdefault(t, []).append(r)
            for t in r.cancel:
                cancels.setdefault(t, []).append(r)
            for t in r.goal_types:
                goals.setdefault(t, []).append(r)
        attribute = tuple(r for r in enabled if isinstance(r.trigger, AttributeTrigger))
        watched: dict[str, AttributeTrigger] = {}
        for r in attribute:
            assert isinstance(r.trigger, AttributeTrigger)
            watched[r.trigger.attribute] = r.trigger
        return cls(
            version=version,
            rules=tuple(enabled),
            policy=policy,
            guards=guards_for(policy),
            by_id={r.id: r for r in enabled},
            attribute_rules=attribute,
            date_rules=tuple(r for r in enabled if isinstance(r.trigger, DateTrigger)),
            watched=tuple(watched[name] for name in sorted(watched)),
            plans={
                kind: Plan(
                    goals=tuple(goals.get(kind, ())),
                    cancels=tuple(cancels.get(kind, ())),
                    enters=tuple(by_event.get(kind, ())),
                    activity=tuple(activity.get(kind, ())),
                    dates=tuple(dates.get(kind, ())),
                )
                for kind in EVENT_TYPE_NAMES
            },
            files=dict(files or {}),
        )


EMPTY = RuleSet.build("none", (), Policy())


class RuleBook:
    """Rule-set versions by the event time from which each applies.

    A deployed version takes effect for events (and due timers) from its
    effective time on, in every worker alike, so a switch happens at the same
    point of the stream everywhere and a replay makes the same decisions.
    """

    def __init__(self, base: RuleSet = EMPTY) -> None:
        # One attribute holding both lists: a reader on another thread sees the
        # old book or the new one, never the starts of one and the sets of the other.
        self._book: tuple[list[float], list[RuleSet]] = ([-math.inf], [base])
        self._only: RuleSet | None = base  # the common case: one version, no search

    def add(self, effective_from: float, rules: RuleSet) -> None:
        starts, sets = self._book
        at = bisect.bisect_right(starts, effective_from)
        self._book = (
            [*starts[:at], effective_from, *starts[at:]],
            [*sets[:at], rules, *sets[at:]],
        )
        self._only = None

    def at(self, ts: float) -> RuleSet:
        only = self._only
        if only is not None:
            return only
        starts, sets = self._book
        return sets[bisect.bisect_right(starts, ts) - 1]

    @property
    def latest(self) -> RuleSet:
        return self._book[1][-1]

    def versions(self) -> list[tuple[float, RuleSet]]:
        starts, sets = self._book
        return list(zip(starts, sets, strict=True))
