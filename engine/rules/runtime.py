"""The rule state machine of one customer: entries, waits, cancels, guards, decisions.

Time is event time throughout: an event decides as of its own timestamp, a
pending action as of its due time. Nothing reads a clock, so a replay, a
dry-run and a recovery after a crash make the same decisions with the same
trigger ids. The dataflow only chooses *when* to call ``fire_due``; what a
due action decides does not depend on it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine import events as ev
from engine.loyalty import LoyaltyProgram
from engine.profile import CustomerState
from engine.rules.context import DAY, Scope
from engine.rules.guards import ADDRESS, Defer, Draft, Holdout, has_consent
from engine.rules.memory import DATE, DEFER, INACTIVE, WAIT, Journey, Pending, Sent, kept
from engine.rules.model import CHANNELS
from engine.rules.ruleset import (
    EMPTY_PLAN,
    AttributeTrigger,
    CompiledRule,
    DateTrigger,
    Expression,
    InactivityTrigger,
    RuleBook,
    RuleSet,
)
from engine.triggers import Decision, Outcome, Trigger, TriggerFired, trigger_id

RuleEffect = Decision | TriggerFired

# Sends older than this are forgotten (the longest window a guard looks back).
_SENT_HORIZON_S = 8 * DAY
_NOTHING: dict[str, Any] = {}


class Rules:
    """Runs a rule book against customer states. Holds no per-customer data."""

    def __init__(self, book: RuleBook, loyalty: LoyaltyProgram) -> None:
        self.book = book
        self.loyalty = loyalty

    # Events ---------------------------------------------------------------------

    def watch(self, state: CustomerState, ts: float) -> dict[str, Any]:
        """Values attribute triggers compare, taken before an event changes them."""
        rules = self.book.at(ts)
        if not rules.watched:
            return _NOTHING
        scope: Scope | None = None
        values = {}
        for trigger in rules.watched:
            if trigger.field is not None:
                values[trigger.attribute] = getattr(state, trigger.field)
            else:
                scope = scope or self._scope(rules, state, None, ts)
                values[trigger.attribute] = trigger.read(scope)
        return values

    def on_event(
        self, state: CustomerState, event: ev.BaseEvent, ts: float, before: dict[str, Any]
    ) -> list[RuleEffect]:
        """Decisions an event (at ``ts``) causes, after it has been applied to the profile.

        The hot path: most events concern few rules, so only the rules indexed
        under the event's type are looked at, a rule is skipped on what its
        state says before anything is evaluated, and the one scope of the
        event is made only when something evaluates.
        """
        rules = self.book.at(ts)
        if not rules.rules:
            return []
        kind = ev.event_type(event)
        plan = rules.plans.get(kind, EMPTY_PLAN)
        out: list[RuleEffect] = []
        scope: Scope | None = None
        journeys = state.journeys
        for rule in plan.goals:
            journey = journeys.get(rule.id)
            if journey is None or not journey.goal_group:
                continue  # no conversion to attribute
            scope = scope or self._scope(rules, state, event, ts)
            self._convert(rules, rule, state, scope, out)
        for rule in plan.cancels:
            if _find_waiting(state, rule.id) is None:
                continue  # nothing to cancel
            scope = scope or self._scope(rules, state, event, ts)
            self._cancel(rules, rule, state, kind, scope, out)
        for rule in plan.enters:
            if not rule.active_from <= ts < rule.active_until:
                continue
            journey = journeys.get(rule.id)
            if rule.max_entries is not None and journey and journey.entries >= rule.max_entries:
                continue
            if rule.waits and not rule.restart and _find(state, rule.id, WAIT) is not None:
                continue  # waiting already, and a new trigger would change nothing
            when = rule.trigger.when  # type: ignore[union-attr]
            if when is not None:
                scope = scope or self._scope(rules, state, event, ts)
                if not _check(rules, rule, state, when, scope.for_rule(rule.id, journey), out):
                    continue
            self._enter(rules, rule, state, event.event_id, event, ts, out)
        for rule in rules.attribute_rules:
            trigger = rule.trigger
            assert isinstance(trigger, AttributeTrigger)
            if trigger.field is not None:
                new = getattr(state, trigger.field)
            else:
                scope = scope or self._scope(rules, state, event, ts)
                new = trigger.read(scope)
            old = before.get(trigger.attribute)
            if old is None or old == new:
                continue  # the common case, as _crossed would decide it
            if _crossed(trigger, old, new, self.loyalty) and self._may_enter(rule, state, ts):
                self._enter(rules, rule, state, event.event_id, event, ts, out)
        if plan.activity:
            _arm_inactivity(state, plan.activity, ts, event)
        # Dates are looked at on a customer's first event under a rule version,
        # then only on the events that can change them (an identify, an order).
        if state.rules_version != rules.version:
            state.rules_version = rules.version
            dates = rules.date_rules
        else:
            dates = plan.dates
        for rule in dates:
            scope = scope or self._scope(rules, state, event, ts)
            self._arm_date(rule, state, scope, ts)
        return out

    # Time -----------------------------------------------------------------------

    def fire_due(self, state: CustomerState, until: float) -> list[RuleEffect]:
        """Act on every pending action due at or before ``until``, oldest first;
        of actions due at the same moment, the higher priority first (it gets
        the send when caps or smart sending leave room for one)."""
        out: list[RuleEffect] = []
        pending = state.pending
        while pending:
            first = min(pending, key=self._order)
            if first.due > until:
                break
            pending.remove(first)
            self._due(state, first, out)
        return out

    def _order(self, p: Pending) -> tuple[float, int, str, str]:
        rule = self.book.at(p.due).by_id.get(p.rule_id)
        return (p.due, -rule.rule.priority if rule is not None else 0, p.rule_id, p.kind)

    @staticmethod
    def next_due(state: CustomerState) -> float | None:
        due = None
        for p in state.pending:
            if due is None or p.due < due:
                due = p.due
        return due

    def _due(self, state: CustomerState, due: Pending, out: list[RuleEffect]) -> None:
        rules = self.book.at(due.due)
        rule = rules.by_id.get(due.rule_id)
        if due.kind in (WAIT, DEFER):
            if rule is None:
                out.append(
                    _decision(
                        rules,
                        state,
                        due.rule_id,
                        "cancelled",
                        due.due,
                        "rule_removed",
                        trigger=trigger_id(
                            due.rule_id, state.customer_id, due.origin_id, due.entry
                        ),
                        origin_id=due.origin_id,
                        entry=due.entry,
                    )
                )
                return
            self._act(rules, rule, state, due.origin_id, due.entry, due.event, due.due, out)
        elif due.kind == INACTIVE and rule is not None:
            if isinstance(rule.trigger, InactivityTrigger) and self._may_enter(
                rule, state, due.due
            ):
                self._enter(rules, rule, state, due.origin_id, due.event, due.due, out)
        elif due.kind == DATE and rule is not None and isinstance(rule.trigger, DateTrigger):
            # An occurrence enters the rule; a look-again (no origin) only re-arms.
            if due.origin_id and self._may_enter(rule, state, due.due):
                self._enter(rules, rule, state, due.origin_id, None, due.due, out)
            scope = self._scope(rules, state, None, due.due)
            self._arm_date(rule, state, scope, due.due)

    # Steps ----------------------------------------------------------------------

    def _scope(
        self, rules: RuleSet, state: CustomerState, event: ev.BaseEvent | None, now: float
    ) -> Scope:
        return Scope(state, event, now, self.loyalty, rules.policy.timezone)

    @staticmethod
    def _may_enter(rule: CompiledRule, state: CustomerState, ts: float) -> bool:
        if not rule.active_from <= ts < rule.active_until:
            return False
        if rule.max_entries is None:
            return True
        journey = state.journeys.get(rule.id)
        return journey is None or journey.entries < rule.max_entries

    def _enter(
        self,
        rules: RuleSet,
        rule: CompiledRule,
        state: CustomerState,
        origin_id: str,
        event: ev.BaseEvent | None,
        at: float,
        out: list[RuleEffect],
    ) -> None:
        journey = state.journeys.get(rule.id)
        if journey is None:
            journey = state.journeys[rule.id] = Journey()
        if not rule.waits:
            _count_entry(journey, origin_id, at)
            self._act(rules, rule, state, origin_id, journey.entries, event, at, out)
            return
        waiting = _find(state, rule.id, WAIT)
        if waiting is not None and not rule.restart:
            return  # already waiting, and a new trigger does not start it again
        if rule.wait_s is not None:
            wait_s = rule.wait_s
        else:
            try:
                scope = self._scope(rules, state, event, at).for_rule(rule.id, journey)
                wait_s = _wait_seconds(rule, scope)
            except ValueError as exc:  # not entered: nothing else changes
                out.append(
                    _decision(
                        rules, state, rule.id, "error", at, str(exc), category=rule.rule.category
                    )
                )
                return
        if waiting is not None:
            # Already waiting: restart the wait from this trigger (the reminder
            # follows the latest add to cart), unless this trigger is older.
            if at + wait_s >= waiting.due:
                waiting.due, waiting.origin_id, waiting.event = at + wait_s, origin_id, kept(event)
            return
        _count_entry(journey, origin_id, at)
        state.pending.append(
            Pending(rule.id, WAIT, at + wait_s, origin_id, journey.entries, kept(event))
        )
        out.append(
            _decision(
                rules,
                state,
                rule.id,
                "entered",
                at,
                origin_id=origin_id,
                entry=journey.entries,
                until=at + wait_s,
                category=rule.rule.category,
            )
        )

    def _act(
        self,
        rules: RuleSet,
        rule: CompiledRule,
        state: CustomerState,
        origin_id: str,
        entry: int,
        event: ev.BaseEvent | None,
        at: float,
        out: list[RuleEffect],
    ) -> None:
        """Decide now: conditions, channel, guards, then fire, suppress, hold out or defer."""
        journey = state.journeys.get(rule.id) or Journey()
        state.journeys[rule.id] = journey
        scope = self._scope(rules, state, event, at).for_rule(rule.id, journey)
        tid = trigger_id(rule.id, state.customer_id, origin_id, entry)
        category = rule.rule.category

        def decide(
            outcome: Outcome, reason: str = "", channel: str = "", until: float = 0.0
        ) -> None:
            out.append(
                Decision(
                    rule_id=rule.id,
                    customer_id=state.customer_id,
                    outcome=outcome,
                    at=at,
                    reason=reason,
                    trigger_id=tid,
                    origin_event_id=origin_id,
                    entry=entry,
                    channel=channel,
                    category=category,
                    until=until,
                    version=rules.version,
                )
            )

        for condition in rule.conditions:
            try:
                holds = condition.evaluate(scope) is True
            except Exception as exc:  # CEL errors are data, not crashes
                decide("exited", f"error: {condition.source}: {exc}")
                return
            if not holds:
                decide("exited", f"condition: {condition.source}")
                return
        channel = self._channel(rules, rule, state)
        if channel is None:
            decide("suppressed", "no_channel")
            return
        draft = Draft(
            rule_id=rule.id,
            category=category,
            channel=channel,
            at=at,
            state=state,
            zone=scope.zone,
            once_per_s=rule.once_per_s,
            last_fired_at=journey.last_fired_at,
            holdout=rule.holdout,
        )
        for guard in rules.guards:
            verdict = guard.check(draft)
            if verdict is None:
                continue
            if isinstance(verdict, Defer):
                until = max(verdict.until, at + 1.0)
                state.pending.append(Pending(rule.id, DEFER, until, origin_id, entry, kept(event)))
                decide("deferred", verdict.reason, channel, until)
            elif isinstance(guard, Holdout):
                _start_goal(rule, journey, "holdout", tid, at)
                decide("held_out", verdict.reason, channel)
            else:
                decide("suppressed", verdict.reason, channel)
            return
        payload: dict[str, Any] = {}
        for name, expression in rule.payload:
            try:
                payload[name] = _plain(expression.evaluate(scope))
            except Exception as exc:
                decide("exited", f"error: payload {name}: {exc}")
                return
        journey.fired += 1
        journey.last_fired_at = at
        _start_goal(rule, journey, "treated", tid, at)
        if category == "marketing":
            _record_send(state, Sent(at, channel, rule.id))
        decide("fired", "", channel)
        out.append(
            TriggerFired(
                Trigger(
                    trigger_id=tid,
                    rule_id=rule.id,
                    customer_id=state.customer_id,
                    origin_event_id=origin_id,
                    entry=entry,
                    fired_at=at,
                    channel=channel,
                    template=rule.rule.action.template,
                    category=category,
                    priority=rule.rule.priority,
                    deadline=at + rule.deadline_s,
                    payload=payload,
                    recipient={k: state.traits[k] for k in ADDRESS.values() if state.traits.get(k)},
                    version=rules.version,
                )
            )
        )

    def _channel(self, rules: RuleSet, rule: CompiledRule, state: CustomerState) -> str | None:
        """The action's channel; ``preferred`` is the most engaged one the customer
        can be reached and (for marketing) consents on, else the policy's fallback order."""
        wanted = rule.rule.action.channel
        if wanted != "preferred":
            return wanted
        policy = rules.policy
        engaged = sorted(
            (ch for ch, e in state.engagement.items() if e.score > 0 and ch in CHANNELS),
            key=lambda ch: (-state.engagement[ch].score, -state.engagement[ch].last_at, ch),
        )
        for channel in (*engaged, *policy.preferred_fallback):
            if rules.contactable:
                return channel
            trait = ADDRESS.get(channel)
            if trait is not None and not state.traits.get(trait):
                continue
            needs_consent = rule.rule.category == "marketing" and channel in policy.consent_required
            if needs_consent and not has_consent(state, channel):
                continue
            return channel
        return None

    def _cancel(
        self,
        rules: RuleSet,
        rule: CompiledRule,
        state: CustomerState,
        kind: str,
        scope: Scope,
        out: list[RuleEffect],
    ) -> None:
        ts = scope.now
        for waiting in [
            p for p in state.pending if p.rule_id == rule.id and p.kind in (WAIT, DEFER)
        ]:
            # A late cancel event older than the entry does not cancel it.
            if waiting.event is not None and ts < waiting.event.ts:
                continue
            conditions = rule.cancel[kind]
            journey = state.journeys.get(rule.id)
            if any(
                c is None or _check(rules, rule, state, c, scope.for_rule(rule.id, journey), out)
                for c in conditions
            ):
                state.pending.remove(waiting)
                tid = trigger_id(rule.id, state.customer_id, waiting.origin_id, waiting.entry)
                out.append(
                    _decision(
                        rules,
                        state,
                        rule.id,
                        "cancelled",
                        ts,
                        kind,
                        trigger=tid,
                        origin_id=waiting.origin_id,
                        entry=waiting.entry,
                        category=rule.rule.category,
                    )
                )

    def _convert(
        self,
        rules: RuleSet,
        rule: CompiledRule,
        state: CustomerState,
        scope: Scope,
        out: list[RuleEffect],
    ) -> None:
        journey = state.journeys.get(rule.id)
        ts = scope.now
        if (
            journey is None
            or not journey.goal_group
            or not (journey.goal_until - rule.goal_within_s <= ts <= journey.goal_until)
        ):
            return
        if rule.goal_when is not None and not _check(
            rules, rule, state, rule.goal_when, scope.for_rule(rule.id, journey), out
        ):
            return
        out.append(
            _decision(
                rules,
                state,
                rule.id,
                "converted",
                ts,
                journey.goal_group,
                trigger=journey.goal_trigger,
                category=rule.rule.category,
            )
        )
        journey.goal_group, journey.goal_until, journey.goal_trigger = "", 0.0, ""

    def _arm_date(self, rule: CompiledRule, state: CustomerState, scope: Scope, now: float) -> None:
        """Keep one pending action at the next occurrence of the rule's date."""
        trigger = rule.trigger
        assert isinstance(trigger, DateTrigger)
        value = trigger.read(scope)
        # The zone is part of what an armed date depends on: a customer who
        # moves gets the date at 9:00 where they live now.
        armed_from = "" if value in (None, "", 0, 0.0) else f"{value}@{scope.zone}"
        existing = _find(state, rule.id, DATE)
        if existing is not None:
            if existing.armed_from == armed_from:
                return
            state.pending.remove(existing)
        if not armed_from:
            return
        occurrence = next_occurrence(trigger, value, scope.zone, now)
        journey = state.journeys.get(rule.id)
        if occurrence is not None and journey is not None and journey.last_origin == occurrence[1]:
            # Entered already (in another time zone, or before a change of
            # ``at``): the occurrence after it, if the date repeats.
            occurrence = next_occurrence(trigger, value, scope.zone, occurrence[0])
        if occurrence is not None and (journey is None or journey.last_origin != occurrence[1]):
            due, origin = occurrence
            state.pending.append(Pending(rule.id, DATE, due, origin, 0, None, armed_from))
        elif isinstance(value, int | float) and not isinstance(value, bool) and value > now:
            # This instant's occurrence was entered already (points expiring):
            # look again once it has passed, when the attribute names the next one.
            state.pending.append(
                Pending(rule.id, DATE, float(value) + 1.0, "", 0, None, armed_from)
            )


# Helpers ------------------------------------------------------------------------------


def _check(
    rules: RuleSet,
    rule: CompiledRule,
    state: CustomerState,
    expression: Expression,
    scope: Scope,
    out: list[RuleEffect],
) -> bool:
    """Whether a trigger, cancel or goal condition holds. One that fails counts
    as false, and is not silent: an ``error`` decision says which and why."""
    try:
        return expression.evaluate(scope) is True
    except Exception as exc:
        reason = f"{expression.source}: {exc}"
        out.append(
            _decision(
                rules, state, rule.id, "error", scope.now, reason, category=rule.rule.category
            )
        )
        return False


def _find_waiting(state: CustomerState, rule_id: str) -> Pending | None:
    """The rule's first wait or deferred action, if any (what a cancel can cancel)."""
    for p in state.pending:
        if p.rule_id == rule_id and (p.kind == WAIT or p.kind == DEFER):
            return p
    return None


def _find(state: CustomerState, rule_id: str, kind: str) -> Pending | None:
    for p in state.pending:
        if p.rule_id == rule_id and p.kind == kind:
            return p
    return None


def _arm_inactivity(
    state: CustomerState, activity: tuple[tuple[str, float], ...], ts: float, event: ev.BaseEvent
) -> None:
    """Set or push back the pending action of each inactivity trigger an activity
    event resets (never bring one forward). In place: it runs on most events."""
    origin_id = event.event_id
    origin = kept(event)
    for rule_id, after_s in activity:
        due = ts + after_s
        for found in state.pending:
            if found.rule_id == rule_id and found.kind == INACTIVE:
                if due >= found.due:
                    found.due, found.origin_id, found.event = due, origin_id, origin
                break
        else:
            state.pending.append(Pending(rule_id, INACTIVE, due, origin_id, 0, origin))


def _count_entry(journey: Journey, origin_id: str, at: float) -> None:
    journey.entries += 1
    journey.last_entry_at = max(journey.last_entry_at, at)
    journey.last_origin = origin_id


def _start_goal(rule: CompiledRule, journey: Journey, group: str, tid: str, at: float) -> None:
    if rule.goal_types:
        journey.goal_group, journey.goal_until, journey.goal_trigger = (
            group,
            at + rule.goal_within_s,
            tid,
        )


def _record_send(state: CustomerState, sent: Sent) -> None:
    horizon = max([sent.ts, *(s.ts for s in state.sent)]) - _SENT_HORIZON_S
    state.sent = [s for s in state.sent if s.ts >= horizon]
    state.sent.append(sent)


def _wait_seconds(rule: CompiledRule, scope: Scope) -> float:
    assert rule.wait_days is not None
    try:
        days = rule.wait_days.evaluate(scope)
    except Exception as exc:
        raise ValueError(f"wait.for_days: {exc}") from None
    if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
        raise ValueError(f"wait.for_days gave {days!r}, not a number of days")
    return float(days) * DAY


def _crossed(trigger: AttributeTrigger, old: Any, new: Any, loyalty: LoyaltyProgram) -> bool:
    if old == new or old is None:
        return False
    if trigger.above is not None:
        return bool(old < trigger.above <= new)
    if trigger.below is not None:
        return bool(old >= trigger.below > new)
    change = trigger.change or "any"
    if trigger.attribute == "tier":
        if not old:  # a first tier is not a change of tier
            return False
        ranks = {t.name: i for i, t in enumerate(loyalty.tiers)}
        old_rank, new_rank = ranks.get(old, -1), ranks.get(new, -1)
        return change == "any" or (new_rank > old_rank) == (change == "up")
    if change == "any":
        return True
    if isinstance(old, str) or isinstance(new, str):
        return False
    return bool(new > old) == (change == "up")


def _decision(
    rules: RuleSet,
    state: CustomerState,
    rule_id: str,
    outcome: Outcome,
    at: float,
    reason: str = "",
    *,
    trigger: str = "",
    origin_id: str = "",
    entry: int = 0,
    until: float = 0.0,
    category: str = "",
) -> Decision:
    return Decision(
        rule_id=rule_id,
        customer_id=state.customer_id,
        outcome=outcome,
        at=at,
        reason=reason,
        trigger_id=trigger,
        origin_event_id=origin_id,
        entry=entry,
        until=until,
        category=category,
        version=rules.version,
    )


def _plain(value: Any) -> Any:
    """A CEL result as JSON-ready Python, maps with their keys sorted: the
    interpreter's maps come back in a per-process order, and a trigger
    decided again after a restart must be the same bytes."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return value


def next_occurrence(
    trigger: DateTrigger, value: Any, zone: dt.tzinfo, now: float
) -> tuple[float, str] | None:
    """The next due time of a date trigger after ``now`` and its occurrence id.

    ``value`` is a date string (``YYYY-MM-DD``, ``MM-DD`` or ``--MM-DD``, as
    birthdays come) or an instant in epoch seconds (``points_expire_at``).
    Month-day dates repeat every year unless ``yearly: false``; instants once.
    """
    label = ".".join(trigger.attribute)
    local_now = dt.datetime.fromtimestamp(now, tz=zone)
    if isinstance(value, int | float) and not isinstance(value, bool):
        date = dt.datetime.fromtimestamp(float(value), tz=zone).date()
        year: int | None = date.year
        month, day = date.month, date.day
        yearly = bool(trigger.yearly)
    else:
        parsed = _month_day(str(value))
        if parsed is None:
            return None
        year, month, day = parsed
        yearly = trigger.yearly if trigger.yearly is not None else True
    years = range(local_now.year - 1, local_now.year + 2) if yearly else [year or local_now.year]
    # ``before`` in whole days counts calendar days, so "30d before, at 10:00"
    # is 10:00 local on that day even across a change of the clocks.
    days, rest = divmod(trigger.before_s, DAY)
    for y in years:
        occurrence = _local_date(y, month, day)
        at = dt.datetime(
            occurrence.year,
            occurrence.month,
            occurrence.day,
            trigger.at_minute // 60,
            trigger.at_minute % 60,
            tzinfo=zone,
        )
        act_on = occurrence - dt.timedelta(days=int(days))
        due = (
            dt.datetime(
                act_on.year,
                act_on.month,
                act_on.day,
                trigger.at_minute // 60,
                trigger.at_minute % 60,
                tzinfo=zone,
            ).timestamp()
            - rest
        )
        if due > now:
            return due, f"{label}:{occurrence.isoformat()}"
        if not yearly and at.timestamp() > now:
            return now, f"{label}:{occurrence.isoformat()}"  # late, but before the date
    return None


def _month_day(text: str) -> tuple[int | None, int, int] | None:
    text = text.strip()
    if text.startswith("--"):
        text = text[2:]
    try:
        parts = [int(x) for x in text[:10].split("-")]
    except ValueError:
        return None
    if len(parts) == 3:
        year, month, day = parts
    elif len(parts) == 2:
        year, (month, day) = None, parts
    else:
        return None
    try:
        dt.date(2000, month, day)  # a leap year: 29 February is a valid birthday
    except ValueError:
        return None
    if year is not None and not 1 <= year <= 9999:
        return None
    return year, month, day


def _local_date(year: int, month: int, day: int) -> dt.date:
    """The date in ``year``; 29 February falls on the 28th in other years."""
    try:
        return dt.date(year, month, day)
    except ValueError:
        return dt.date(year, month, min(day, 28))
