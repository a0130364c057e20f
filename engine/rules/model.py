"""The rule file format, as msgspec Structs: one source for validation, docs and JSON Schema.

A rule file (``rules/<id>.yaml``) holds one ``Rule``; ``rules/policy.yaml``
holds the ``Policy`` every marketing rule obeys; ``rules/tests/*.yaml`` hold
``RuleTest`` cases. The validator (``engine.rules.validate``) walks these types
to report every problem of a file with its line and column, and
``json_schema()`` gives editors the same types for autocompletion.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from engine.rules.durations import DURATION_HELP, DURATION_PATTERN, TIME_OF_DAY_PATTERN

Duration = Annotated[
    str,
    Meta(
        pattern=DURATION_PATTERN,
        description=f"A duration: {DURATION_HELP}.",
        examples=["30m", "1h", "7d"],
        extra={"pulse": "duration"},
    ),
]
TimeOfDay = Annotated[
    str,
    Meta(
        pattern=TIME_OF_DAY_PATTERN,
        description="A local time of day, HH:MM on a 24-hour clock.",
        examples=["09:00", "21:30"],
        extra={"pulse": "time_of_day"},
    ),
]
Cel = Annotated[
    str,
    Meta(
        min_length=1,
        description="A CEL expression over event, profile, cart, item, rule, now and local.",
        extra={"pulse": "cel"},
    ),
]
EventType = Annotated[
    str,
    Meta(description="An event type (docs/events.md).", extra={"pulse": "event_type"}),
]
RuleId = Annotated[
    str,
    Meta(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Lower-case letters, digits and underscores, starting with a letter.",
        examples=["abandoned_cart"],
    ),
]
Timestamp = Annotated[
    str,
    Meta(
        description="A date (2026-12-01) or an RFC 3339 time (2026-12-01T09:00:00Z).",
        extra={"pulse": "timestamp"},
    ),
]
ChannelName = Literal["email", "sms", "push", "webhook", "in_app"]
ActionChannel = Literal["email", "sms", "push", "webhook", "in_app", "preferred"]
Category = Literal["marketing", "transactional"]
Percent = Annotated[float, Meta(ge=0, le=100, description="A percentage, 0 to 100.")]

CHANNELS: tuple[str, ...] = ("email", "sms", "push", "webhook", "in_app")


class Trigger(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What starts the rule for a customer: exactly one of ``event``,
    ``inactive_for``, ``attribute`` or ``date``."""

    event: Annotated[
        EventType | list[EventType] | None,
        Meta(
            description="Event trigger: the rule starts on an event of this type, or of any "
            "type in the list (docs/events.md)."
        ),
    ] = None  # an event of this type (or any of these)
    when: Annotated[
        Cel | None,
        Meta(
            description="Event triggers only: a CEL condition the event must meet to start the "
            "rule. It reads the event and the profile as the event updated it; an expression "
            "that fails counts as false and is recorded as an error decision."
        ),
    ] = None  # event triggers: CEL over the event and the updated profile
    inactive_for: Annotated[
        Duration | None,
        Meta(
            description="Inactivity trigger: the rule starts when the customer has done nothing "
            "that counts as activity for this long (e.g. 60d); every activity starts the count "
            "again."
        ),
    ] = None  # no activity for this long
    activity: Annotated[
        list[EventType] | None,
        Meta(
            description="Inactivity triggers only: the event types that count as activity "
            "(default: every type but message_* events, which Pulse's own sends cause)."
        ),
    ] = None  # what counts as activity (default: not message_*)
    attribute: Annotated[
        str | None,
        Meta(
            description="Attribute trigger: a profile attribute to watch, e.g. tier or "
            "loyalty_points (docs/rule-fields.md); the rule starts when an event changes it as "
            "`change`, `above` or `below` says."
        ),
    ] = None  # a profile attribute (e.g. tier, loyalty_points)
    change: Annotated[
        Literal["up", "down", "any"] | None,
        Meta(
            description="Attribute triggers: start when the value goes up, goes down, or "
            "changes at all (any, the default). For tier, up and down follow the order of the "
            "tiers in rules/loyalty.yaml, and a customer's first tier is not a change."
        ),
    ] = None  # attribute: it changed this way
    above: Annotated[
        float | None,
        Meta(
            description="Attribute triggers: start when the value rises from below this number "
            "to this number or more."
        ),
    ] = None  # attribute: it rose to or above this value
    below: Annotated[
        float | None,
        Meta(
            description="Attribute triggers: start when the value falls from this number or "
            "more to below it."
        ),
    ] = None  # attribute: it fell below this value
    date: Annotated[
        str | None,
        Meta(
            description="Date trigger: a date on the profile, either traits.<name> holding "
            "YYYY-MM-DD, MM-DD or --MM-DD (e.g. traits.birthday) or an instant such as "
            "points_expire_at."
        ),
    ] = None  # a date attribute (traits.birthday, points_expire_at)
    at: Annotated[
        TimeOfDay | None,
        Meta(
            description="Date triggers: the time of day to act, HH:MM in the customer's own "
            "time zone (default 09:00)."
        ),
    ] = None  # date: local time of day to act (default 09:00)
    before: Annotated[
        Duration | None,
        Meta(
            description="Date triggers: act this long before the date (e.g. 30d); whole days "
            "count calendar days, so the time of day holds when the clocks change."
        ),
    ] = None  # date: act this long before the date
    yearly: Annotated[
        bool | None,
        Meta(
            description="Date triggers: act every year, or once. Default: every year for dates "
            "written as text (birthdays), once for instants (points_expire_at)."
        ),
    ] = None  # date: every year (default: true for month-day dates)


class CancelOn(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """An event that cancels the pending action (an order cancels the cart reminder)."""

    event: Annotated[
        EventType | list[EventType],
        Meta(description="The event type (or a list of them) that cancels the pending action."),
    ]
    when: Annotated[
        Cel | None,
        Meta(
            description="Cancel only when this CEL condition holds for the cancelling event; an "
            "expression that fails does not cancel."
        ),
    ] = None


class Wait(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How long to wait before acting, and what cancels the wait.

    ``for`` is a fixed duration; ``for_days`` a CEL expression, evaluated when
    the rule is entered, giving a number of days (per-category intervals).
    """

    for_: Annotated[
        Duration | None,
        Meta(description="Wait this long after the rule starts before deciding (e.g. 30m)."),
    ] = msgspec.field(default=None, name="for")
    for_days: Annotated[
        Cel | None,
        Meta(
            description="Instead of `for`: a CEL expression giving the number of days to wait, "
            "evaluated when the rule starts (e.g. an interval per category from rule.params)."
        ),
    ] = None
    cancel_on: Annotated[
        list[CancelOn],
        Meta(
            description="Events that cancel the wait, and a send deferred by quiet hours; the "
            "decision is cancelled with the event type as the reason."
        ),
    ] = []
    restart: Annotated[
        bool,
        Meta(
            description="A new trigger while the customer is waiting starts the wait again from "
            "it (true, the default) or changes nothing (false)."
        ),
    ] = True  # a new trigger while waiting starts the wait again


class Action(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What to send: the channel, the template and the payload fields (CEL)."""

    channel: Annotated[
        ActionChannel,
        Meta(
            description="email, sms, push, webhook or in_app; or preferred: the channel the "
            "customer engages with most among those they can be reached (and, for marketing, "
            "consent) on, else the first such channel of the policy's preferred_fallback."
        ),
    ]
    template: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=200,
            description="The name of the message template the dispatcher sends.",
        ),
    ]
    payload: Annotated[
        dict[str, Cel],
        Meta(
            description="Fields for the template: a name and a CEL expression each, evaluated "
            "when the message is decided."
        ),
    ] = {}
    deadline: Annotated[
        Duration,
        Meta(
            description="Not worth delivering later than this after the decision (a duration "
            "such as 12h; default 24h)."
        ),
    ] = "24h"  # not worth sending later than this after the decision


class Limits(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    once_per: Annotated[
        Duration | None,
        Meta(
            description="Send a customer this rule's message at most once per this long; a "
            "send sooner is suppressed (reason once_per)."
        ),
    ] = None  # fire at most once per this long per customer
    max_entries: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(
            description="Start the rule for a customer at most this many times, ever; a start "
            "counts even when its message is suppressed."
        ),
    ] = None  # enter at most this often, ever


class Goal(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The conversion the rule is for, attributed within ``within`` of a send
    (or of a hold-out, to measure lift)."""

    event: Annotated[
        EventType,
        Meta(description="The event type that counts as a conversion (docs/events.md)."),
    ]
    when: Annotated[
        Cel | None,
        Meta(description="Only goal events for which this CEL condition holds count."),
    ] = None
    within: Annotated[
        Duration,
        Meta(
            description="A goal event counts if it comes this long or less after the send "
            "(treated) or the hold-out (holdout); a duration such as 3d (the default)."
        ),
    ] = "3d"


class Active(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A campaign window: the rule only enters customers between these times."""

    from_: Annotated[
        Timestamp | None,
        Meta(
            description="The rule starts for no customer before this time (a date alone is "
            "00:00 UTC)."
        ),
    ] = msgspec.field(default=None, name="from")
    until: Annotated[
        Timestamp | None,
        Meta(
            description="The rule starts for no customer from this time on (a date alone is "
            "00:00 UTC); waits already running still end in a decision."
        ),
    ] = None


class Rule(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One trigger rule: ``rules/<id>.yaml``."""

    id: RuleId
    trigger: Annotated[
        Trigger,
        Meta(
            description="What starts the rule for a customer: exactly one of event, "
            "inactive_for, attribute or date."
        ),
    ]
    action: Annotated[Action, Meta(description="What to send when the rule decides to act.")]
    description: Annotated[str, Meta(description="What the rule is for, in plain words.")] = ""
    enabled: Annotated[
        bool,
        Meta(
            description="false keeps the file but leaves the rule out of the rule set; its "
            "pending waits end as cancelled (rule_removed) when they come due."
        ),
    ] = True
    priority: Annotated[
        int,
        Meta(
            ge=0,
            le=100,
            description="0 to 100 (default 50). Of rules one event starts, and of actions due "
            "at the same moment, the highest priority is decided first and so gets the send "
            "when caps or smart sending leave room for one. Copied into the trigger record.",
        ),
    ] = 50
    category: Annotated[
        Category,
        Meta(
            description="marketing (default) obeys every guard of rules/policy.yaml; "
            "transactional skips consent, open-ticket, smart-sending, cap and quiet-hour guards "
            "and does not count towards the caps."
        ),
    ] = "marketing"
    active: Annotated[
        Active | None,
        Meta(description="A campaign window: the rule starts for customers only within it."),
    ] = None
    params: Annotated[
        dict[str, Any],
        Meta(
            description="Constants the rule's expressions read as rule.params.<name>: numbers, "
            "text, lists and maps."
        ),
    ] = {}  # constants the rule's CEL reads as rule.params.<name>
    wait: Annotated[
        Wait | None,
        Meta(
            description="Wait before deciding (for a duration, or for_days computed), and the "
            "events that cancel the wait. Without it the rule decides at once."
        ),
    ] = None
    conditions: Annotated[
        list[Cel],
        Meta(
            description="CEL conditions that must all be true when the action is due (after "
            "the wait); the first that is not ends the rule for this time as exited."
        ),
    ] = []  # all must hold when the action is due
    limits: Annotated[
        Limits,
        Meta(description="How often a customer may get this rule: once_per and max_entries."),
    ] = Limits()
    holdout: Annotated[
        Percent,
        Meta(
            description="Percentage of customers (0 to 100) held out: decided and recorded as "
            "held_out but not messaged, to measure the rule's lift; always the same customers."
        ),
    ] = 0.0  # share of customers held out (recorded, not messaged)
    goal: Annotated[
        Goal | None,
        Meta(
            description="The conversion the rule is for, counted after a send (treated) or a "
            "hold-out (holdout)."
        ),
    ] = None


class QuietHours(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """No marketing on these channels between ``start`` and ``end``, local time;
    what falls inside is deferred to ``end``, never dropped."""

    start: Annotated[
        TimeOfDay,
        Meta(description="Start of the quiet period, HH:MM local time (default 21:00)."),
    ] = "21:00"
    end: Annotated[
        TimeOfDay,
        Meta(
            description="End of the quiet period, HH:MM local time (default 08:00); what falls "
            "inside is deferred to it."
        ),
    ] = "08:00"
    channels: Annotated[
        list[ChannelName],
        Meta(description="The channels quiet hours apply to (default email, sms and push)."),
    ] = msgspec.field(default_factory=lambda: ["email", "sms", "push"])


class Caps(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Marketing messages per customer, over all channels, in a rolling day and week."""

    daily: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(
            description="At most this many marketing messages in any 24 hours (default 2); "
            "empty for no daily cap."
        ),
    ] = 2
    weekly: Annotated[
        Annotated[int, Meta(ge=1)] | None,
        Meta(
            description="At most this many marketing messages in any 7 days (default 5); "
            "empty for no weekly cap."
        ),
    ] = 5


class Policy(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """``rules/policy.yaml``: the guards every marketing rule obeys."""

    timezone: Annotated[
        str,
        Meta(
            description="The time zone of customers whose profile has none (the identify trait "
            "timezone), e.g. Europe/London (default UTC)."
        ),
    ] = "UTC"  # for customers whose profile has no time zone
    smart_sending: Annotated[
        dict[ChannelName, Duration],
        Meta(
            description="Per channel: no second marketing message on it within this long of "
            "another, before or after (default 16h for email, sms and push; channels left out "
            "have none)."
        ),
    ] = msgspec.field(default_factory=lambda: {"email": "16h", "sms": "16h", "push": "16h"})
    quiet_hours: Annotated[
        QuietHours | None,
        Meta(
            description="No marketing at night in the customer's own time zone: deferred to the "
            "end, never dropped. Empty turns quiet hours off."
        ),
    ] = QuietHours()
    suppress_while_ticket_open: Annotated[
        bool,
        Meta(description="No marketing while the customer has a support ticket open."),
    ] = True
    consent_required: Annotated[
        list[ChannelName],
        Meta(
            description="Channels on which marketing needs the customer's latest consent "
            "decision to be yes (default email, sms and push)."
        ),
    ] = msgspec.field(default_factory=lambda: ["email", "sms", "push"])
    caps: Annotated[
        Caps,
        Meta(description="Marketing messages per customer over all channels, daily and weekly."),
    ] = Caps()
    preferred_fallback: Annotated[
        list[ChannelName],
        Meta(
            description="For channel: preferred, the channels to try after those the customer "
            "engages with, in this order (default email, push, sms, in_app)."
        ),
    ] = msgspec.field(default_factory=lambda: ["email", "push", "sms", "in_app"])


# Rule tests ---------------------------------------------------------------------


class Expected(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    at: Annotated[
        str,
        Meta(
            description="When the decision is made: an RFC 3339 time, or an offset from start "
            "such as +30m."
        ),
    ]
    rule: Annotated[str, Meta(description="The id of the rule that decides.")]
    outcome: Annotated[
        Literal[
            "entered",
            "fired",
            "suppressed",
            "held_out",
            "deferred",
            "cancelled",
            "exited",
            "converted",
            "error",
        ],
        Meta(description="What the rule decided."),
    ]
    customer: Annotated[
        str | None, Meta(description="The customer's id (not compared when left out).")
    ] = None
    reason: Annotated[
        str | None,
        Meta(
            description="The decision's reason, e.g. once_per or condition: cart.quantity > 0 "
            "(not compared when left out)."
        ),
    ] = None
    channel: Annotated[
        str | None, Meta(description="The channel (not compared when left out).")
    ] = None


class RuleTest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """``rules/tests/<name>.yaml``: given these events, expect these decisions."""

    name: Annotated[str, Meta(description="The test's name (pulse rules test -k selects by it).")]
    start: Annotated[
        Timestamp,
        Meta(
            description="The test's start: a date or an RFC 3339 time; offsets such as +30m "
            "count from it."
        ),
    ]
    # Each: ``at`` (RFC 3339, or an offset from ``start`` such as +30m), ``type``,
    # ``customer`` (for customer_id) and the event's own fields (docs/events.md).
    events: Annotated[
        list[dict[str, Any]],
        Meta(
            description="The events, in the order they arrive. Each has at (an RFC 3339 time or "
            "an offset from start such as +30m; default +0s), type, customer (the customer_id) "
            "and the event's own fields (docs/events.md)."
        ),
    ]
    expect: Annotated[
        list[Expected],
        Meta(description="The decisions expected, in the order they are made."),
    ]
    rules: Annotated[
        list[str],
        Meta(
            description="Compare only these rules' decisions (default: every rule's); every "
            "rule still runs."
        ),
    ] = []  # the rules under test (default: every rule)
    outcomes: Annotated[
        list[str],
        Meta(description="The outcomes compared (default: every outcome but entered)."),
    ] = []  # outcomes compared (default: every outcome but entered)
    until: Annotated[
        str | None,
        Meta(
            description="Run the clock to this time or offset (default: one day after the last "
            "event or expected decision)."
        ),
    ] = None  # run the clock to here (default: 1 day after the last event)
    contactable: Annotated[
        bool,
        Meta(
            description="Count every customer as having an address and consent on every "
            "channel (for tests that are not about reachability)."
        ),
    ] = False  # every customer has an address and consent on every channel
    description: Annotated[str, Meta(description="What the test shows, in plain words.")] = ""


def json_schema(kind: type[Struct]) -> dict[str, Any]:
    """JSON Schema for editors, generated from the Structs above."""
    schema: dict[str, Any] = msgspec.json.schema(kind)
    return schema
