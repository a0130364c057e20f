"""``rules/actions.yaml`` to a compiled action book, or every problem with its
file, line and column.

The checks are the trigger rules' own (``engine.rules``): the YAML walk of
``yamlcheck`` against the Structs of ``engine.nba.config``, and the rule
checker's CEL type check, compilation to flat variables and event-type names,
so an eligibility condition is held to exactly what a rule condition is and
reads the same context at the same cost. Each action and each reward is
checked on its own, so one broken entry does not hide the problems of the
others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.nba.config import DECIDE_ON, ActionsFile, ActionSpec, PolicySettings, Reward
from engine.nba.eligibility import Eligibility
from engine.nba.features import FEATURES_VERSION
from engine.rules import celcheck, yamlcheck
from engine.rules.context import RULE_FIELDS, cel_literal, environment
from engine.rules.durations import parse_duration
from engine.rules.model import Action, Rule, Trigger
from engine.rules.ruleset import Expression
from engine.rules.validate import _Checker
from engine.rules.yamlcheck import Document, Path, Problem

ACTIONS_FILE = "actions.yaml"


@dataclass(frozen=True)
class CompiledAction:
    id: str
    eligible: Expression | None  # None: always eligible
    weight: float
    params: dict[str, Any]


@dataclass(frozen=True)
class CompiledReward:
    when: Expression | None
    value: float


@dataclass(frozen=True)
class ActionBook:
    """One version of actions.yaml, ready for the hot path."""

    version: str  # the context version: the file's text and the feature set
    actions: tuple[CompiledAction, ...]  # in file order
    control: str
    rewards: dict[str, tuple[CompiledReward, ...]]  # by event type
    decide_on: frozenset[str]
    exploration: float
    holdout: float  # share, 0..1
    window_s: float
    reward_noise: float
    max_pending: int
    by_id: dict[str, CompiledAction] = field(init=False)
    eligibility: Eligibility = field(init=False, compare=False, repr=False)
    top_reward: float = field(init=False)  # earning it settles a decision at once

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {a.id: a for a in self.actions})
        object.__setattr__(self, "eligibility", Eligibility(self.actions, self.control))
        values = [r.value for rs in self.rewards.values() for r in rs]
        object.__setattr__(self, "top_reward", max(values, default=1.0))


@dataclass
class LoadedActions:
    book: ActionBook | None  # None when there was any problem
    problems: list[Problem]


def load_actions(name: str, text: str) -> LoadedActions:
    """Check and compile an actions file; ``name`` is how messages name it."""
    doc, problems = yamlcheck.parse(text, name)
    if doc is None:
        return LoadedActions(None, problems)
    problems += yamlcheck.check(doc, ActionsFile, name)
    structural = bool(problems)
    check = _FileCheck(name, doc)
    policy = check.policy()
    actions = check.actions(check.control())
    rewards = check.rewards()
    problems += check.problems
    problems = sorted(dict.fromkeys(problems))
    if problems or structural or policy is None or actions is None or rewards is None:
        return LoadedActions(None, problems)
    settings, decide_on = policy
    book = ActionBook(
        version=context_version(text),
        actions=actions,
        control=settings.control,
        rewards=rewards,
        decide_on=decide_on,
        exploration=settings.exploration,
        holdout=settings.holdout / 100.0,
        window_s=parse_duration(settings.window),
        reward_noise=settings.reward_noise,
        max_pending=settings.max_pending,
    )
    return LoadedActions(book, [])


def context_version(text: str) -> str:
    """A short hash of the file and the feature set: decisions made under the
    same version saw the same eligibility, rewards and features."""
    digest = hashlib.blake2b(f"{FEATURES_VERSION}\0{text}".encode(), digest_size=6)
    return digest.hexdigest()


def _stub(action_id: str, params: dict[str, Any]) -> Rule:
    """A rule that stands for an action in the rule checker: its id is what
    ``rule.id`` reads and its params what ``rule.params`` reads."""
    return Rule(
        id=action_id, trigger=Trigger(), action=Action(channel="email", template="-"), params=params
    )


class _FileCheck:
    """The checks of one actions file beyond its structure, field by field.

    Like ``pulse rules check``, a field is checked whenever it is usable on its
    own (a condition that is text, event types that are a list of names), even
    if its entry has other problems, so one round of fixes is enough; only an
    entirely valid file compiles.
    """

    def __init__(self, name: str, doc: Document) -> None:
        self.name = name
        self.doc = doc
        self.problems: list[Problem] = []

    def problem(self, path: Path, message: str) -> None:
        line, column = self.doc.mark(path)
        self.problems.append(Problem(self.name, line, column, message))

    def _section(self, key: str) -> Any:
        top = self.doc.value
        return top.get(key) if isinstance(top, dict) else None

    def _entry(self, path: Path, kind: type[msgspec.Struct]) -> Any:
        """The Struct at ``path`` if that part of the file is valid, else None
        (the check of the whole file has reported its problems already)."""
        if yamlcheck.check(self.doc, kind, self.name, path):
            return None
        return yamlcheck.to_struct(self.doc, kind, path)

    def _checker(self, action_id: str, params: dict[str, Any]) -> _Checker:
        return _Checker(self.name, self.doc, _stub(action_id, params))

    def _take(self, checker: _Checker) -> bool:
        """Collect a checker's problems; whether there were none."""
        self.problems += checker.problems
        return not checker.problems

    def policy(self) -> tuple[PolicySettings, frozenset[str]] | None:
        raw = self._section("policy")
        raw = raw if isinstance(raw, dict) else {}
        checker = self._checker("policy", {})
        types: tuple[str, ...] = DECIDE_ON
        decide_on = raw.get("decide_on")
        if isinstance(decide_on, list) and all(isinstance(t, str) for t in decide_on):
            types = checker.event_types(("policy", "decide_on"), decide_on)
        window = raw.get("window")
        if isinstance(window, str) and _seconds(window) == 0:
            checker.problem(("policy", "window"), "the window must be longer than zero")
        ok = self._take(checker)
        settings = self._entry(("policy",), PolicySettings) if "policy" in self.doc.value else None
        if "policy" not in self.doc.value:
            settings = PolicySettings()
        return (settings, frozenset(types)) if ok and settings is not None else None

    def control(self) -> str | None:
        """The control action's id as written (or the default), if it is text."""
        raw = self._section("policy")
        control = raw.get("control", PolicySettings().control) if isinstance(raw, dict) else None
        if raw is None:
            control = PolicySettings().control
        return control if isinstance(control, str) else None

    def actions(self, control: str | None) -> tuple[CompiledAction, ...] | None:
        items = self._section("actions")
        if not isinstance(items, list):
            return None
        compiled: list[CompiledAction] = []
        seen: set[str] = set()
        ok = True
        for i, raw in enumerate(items):
            if not isinstance(raw, dict):
                ok = False
                continue
            action_id = raw.get("id") if isinstance(raw.get("id"), str) else None
            if action_id is not None and action_id in seen:
                self.problem(("actions", i, "id"), f"action id `{action_id}` is already used above")
                ok = False
            if action_id is not None:
                seen.add(action_id)
            action = self._action(("actions", i), raw, action_id, action_id == control)
            spec = self._entry(("actions", i), ActionSpec)
            if action is None or spec is None:
                ok = False
            else:
                compiled.append(action)
        if control is not None and control not in seen:
            self.problem(
                ("policy", "control") if "policy" in self.doc.value else ("actions",),
                f"the control action `{control}` is not among the actions: add it "
                "(no `eligible`: it is always eligible)",
            )
            ok = False
        return tuple(compiled) if ok else None

    def _action(
        self, path: Path, raw: dict[str, Any], action_id: str | None, is_control: bool
    ) -> CompiledAction | None:
        """The action compiled from what is usable of it (None on any problem here)."""
        params = raw.get("params") if isinstance(raw.get("params"), dict) else {}
        assert isinstance(params, dict)
        checker = self._checker(action_id or "action", params)
        for key, value in params.items():
            try:
                cel_literal(value)
            except ValueError as exc:
                checker.problem((*path, "params", key), f"`{key}` cannot be used: {exc}")
        source = raw.get("eligible")
        eligible: Expression | None = None
        if source is not None and is_control:
            checker.problem(
                (*path, "eligible"),
                f"`{action_id}` is the control action, always eligible: remove `eligible`",
            )
        elif isinstance(source, str) and source.strip():
            where = (*path, "eligible")
            eligible = checker.expression(where, source, None)
            if eligible is not None:
                self._no_rule_memory(checker, where, source, params)
        if not self._take(checker) or action_id is None:
            return None
        weight = raw.get("weight", 1.0)
        return CompiledAction(action_id, eligible, float(weight), dict(params))

    def _no_rule_memory(
        self, checker: _Checker, path: Path, source: str, params: dict[str, Any]
    ) -> None:
        """``rule.entries`` and the like are a trigger rule's memory of a
        customer: an action has none, so reading one is a mistake."""
        env = environment(None, params, with_item=False)
        for ref in celcheck.check(source, env).references:
            if ref.root == "rule" and ref.path[:1] and ref.path[0] in RULE_FIELDS:
                line, column = self.doc.locate(path, ref.start)
                field_name = ".".join(("rule", *ref.path))
                checker.problems.append(
                    Problem(
                        self.name,
                        line,
                        column,
                        f"`{field_name}` is a trigger rule's memory; an action has none",
                    )
                )
                checker.paths.append(path)

    def rewards(self) -> dict[str, tuple[CompiledReward, ...]] | None:
        items = self._section("rewards")
        if not isinstance(items, list):
            return None
        by_type: dict[str, list[CompiledReward]] = {}
        ok = True
        for i, raw in enumerate(items):
            if not isinstance(raw, dict):
                ok = False
                continue
            checker = self._checker("reward", {})
            event = raw.get("event")
            types = (
                checker.event_types(("rewards", i, "event"), event)
                if isinstance(event, str)
                else ()
            )
            source = raw.get("when")
            when = (
                checker.expression(("rewards", i, "when"), source, types)
                if isinstance(source, str) and source.strip() and types
                else None
            )
            spec = self._entry(("rewards", i), Reward)
            if not self._take(checker) or spec is None:
                ok = False
                continue
            for kind in types:
                by_type.setdefault(kind, []).append(CompiledReward(when, spec.value))
        if not ok:
            return None
        return {kind: tuple(rs) for kind, rs in by_type.items()}


def _seconds(text: str) -> float | None:
    """A duration's seconds; None when it is no duration (yamlcheck says so)."""
    try:
        return parse_duration(text)
    except ValueError:
        return None
