"""Guards: the policy every marketing message obeys, decided where the facts are.

Each guard looks at one would-be send (a ``Draft``) and either lets it pass
(``None``), suppresses it with its own name as the reason, or defers it to a
later time (quiet hours). They run in a fixed order inside the customer's
state, with no round trip; the order matters only for which reason is
recorded when several apply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.profile import CustomerState
from engine.rules.durations import parse_duration, parse_time_of_day
from engine.rules.model import Policy

MARKETING = "marketing"


@dataclass(slots=True)
class Draft:
    """A send the engine is about to decide on (not frozen: a frozen dataclass
    costs microseconds to build, and one is built for every decision)."""

    rule_id: str
    category: str
    channel: str
    at: float  # decision time (event time)
    state: CustomerState
    zone: dt.tzinfo
    once_per_s: float | None
    last_fired_at: float
    holdout: float  # share held out, 0..1


@dataclass(frozen=True)
class Suppress:
    reason: str


@dataclass(frozen=True)
class Defer:
    reason: str
    until: float


Verdict = Suppress | Defer | None


class Guard(Protocol):
    name: str

    def check(self, draft: Draft) -> Verdict: ...


class RuleFrequency:
    """``limits.once_per``: a rule fires at most once per period per customer."""

    name = "once_per"

    def check(self, draft: Draft) -> Verdict:
        if (
            draft.once_per_s
            and draft.last_fired_at
            and (abs(draft.at - draft.last_fired_at) < draft.once_per_s)
        ):
            return Suppress(self.name)
        return None


# What a channel needs in the profile to reach the customer at all: the trait
# holding its address (also what a trigger carries as its recipient).
ADDRESS = {"email": "email", "sms": "phone", "push": "push_token"}


class Reachable:
    """E-mail needs an address, SMS a phone number and push a device token,
    whatever the category."""

    name = "unreachable"

    def check(self, draft: Draft) -> Verdict:
        trait = ADDRESS.get(draft.channel)
        if trait is not None and not draft.state.traits.get(trait):
            return Suppress(self.name)
        return None


class ConsentRequired:
    """Marketing on a consent channel needs the customer's latest decision to be yes."""

    name = "no_consent"

    def __init__(self, channels: Sequence[str]) -> None:
        self.channels = frozenset(channels)

    def check(self, draft: Draft) -> Verdict:
        if draft.category != MARKETING or draft.channel not in self.channels:
            return None
        return None if has_consent(draft.state, draft.channel) else Suppress(self.name)


def has_consent(state: CustomerState, channel: str) -> bool:
    decision = state.consent.get(channel)
    return decision is not None and decision.granted


class SupportTicketOpen:
    """No marketing while the customer has a support ticket open."""

    name = "open_ticket"

    def check(self, draft: Draft) -> Verdict:
        if draft.category == MARKETING and draft.state.open_tickets:
            return Suppress(self.name)
        return None


class SmartSendingWindow:
    """No second marketing message on a channel within its window (either side,
    so a late event deciding at an earlier time cannot squeeze one in)."""

    name = "smart_sending"

    def __init__(self, windows: dict[str, float]) -> None:
        self.windows = windows

    def check(self, draft: Draft) -> Verdict:
        window = self.windows.get(draft.channel)
        if draft.category != MARKETING or not window:
            return None
        for sent in draft.state.sent:
            if sent.channel == draft.channel and abs(sent.ts - draft.at) < window:
                return Suppress(self.name)
        return None


class FrequencyCap:
    """At most ``limit`` marketing messages in any rolling ``period_s``, all channels."""

    def __init__(self, name: str, limit: int, period_s: float) -> None:
        self.name = name
        self.limit = limit
        self.period_s = period_s

    def check(self, draft: Draft) -> Verdict:
        if draft.category != MARKETING:
            return None
        times = sorted(
            [s.ts for s in draft.state.sent if abs(s.ts - draft.at) < self.period_s] + [draft.at]
        )
        # Any window of period_s holding limit + 1 sends, the new one among them?
        for i in range(len(times) - self.limit):
            if times[i + self.limit] - times[i] < self.period_s:
                return Suppress(self.name)
        return None


class QuietHours:
    """No marketing at night in the customer's own time zone: deferred to the
    end of the quiet period, never dropped."""

    name = "quiet_hours"

    def __init__(self, start: str, end: str, channels: Sequence[str]) -> None:
        self.start = parse_time_of_day(start)
        self.end = parse_time_of_day(end)
        self.channels = frozenset(channels)

    def quiet(self, minute_of_day: int) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= minute_of_day < self.end
        return minute_of_day >= self.start or minute_of_day < self.end

    def check(self, draft: Draft) -> Verdict:
        if draft.category != MARKETING or draft.channel not in self.channels:
            return None
        local = dt.datetime.fromtimestamp(draft.at, tz=draft.zone)
        if not self.quiet(local.hour * 60 + local.minute):
            return None
        return Defer(self.name, self.next_allowed(local))

    def next_allowed(self, local: dt.datetime) -> float:
        """The first end of the quiet period after ``local``."""
        end = local.replace(hour=self.end // 60, minute=self.end % 60, second=0, microsecond=0)
        if end <= local:
            end = (local + dt.timedelta(days=1)).replace(
                hour=self.end // 60, minute=self.end % 60, second=0, microsecond=0
            )
        # Wall-clock arithmetic in the zone, then back to an instant: a DST
        # change overnight still lands on the local end time.
        return end.replace(tzinfo=local.tzinfo).timestamp()


class Holdout:
    """A stable share of customers per rule is held out: recorded, not messaged,
    so the rule's lift can be measured against them."""

    name = "held_out"

    def check(self, draft: Draft) -> Verdict:
        if draft.holdout > 0 and holdout_bucket(draft.state.customer_id, draft.rule_id) < (
            draft.holdout
        ):
            return Suppress(self.name)
        return None


def holdout_bucket(customer_id: str, rule_id: str) -> float:
    """A number in [0, 1) fixed for a customer and rule (not Python's salted hash)."""
    digest = hashlib.blake2b(f"{rule_id}\x1f{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def guards_for(policy: Policy, contactable: bool = False) -> tuple[Guard, ...]:
    """The guards in the order they are checked; hold-out comes last so both
    groups are equally eligible. ``contactable`` leaves out address and consent
    checks (dry-runs over history that has neither)."""
    guards: list[Guard] = [RuleFrequency()]
    if not contactable:
        guards += [Reachable(), ConsentRequired(policy.consent_required)]
    if policy.suppress_while_ticket_open:
        guards.append(SupportTicketOpen())
    guards.append(
        SmartSendingWindow({ch: parse_duration(d) for ch, d in policy.smart_sending.items()})
    )
    if policy.caps.daily:
        guards.append(FrequencyCap("daily_cap", policy.caps.daily, 86400.0))
    if policy.caps.weekly:
        guards.append(FrequencyCap("weekly_cap", policy.caps.weekly, 7 * 86400.0))
    if policy.quiet_hours is not None:
        qh = policy.quiet_hours
        guards.append(QuietHours(qh.start, qh.end, qh.channels))
    guards.append(Holdout())
    return tuple(guards)
