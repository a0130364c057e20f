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

    event: EventType | list[EventType] | None = None  # an event of this type (or any of these)
    when: Cel | None = None  # event triggers: CEL over the event and the updated profile
    inactive_for: Duration | None = None  # no activity for this long
    activity: list[EventType] | None = None  # what counts as activity (default: not message_*)
    attribute: str | None = None  # a profile attribute (e.g. tier, loyalty_points)
    change: Literal["up", "down", "any"] | None = None  # attribute: it changed this way
    above: float | None = None  # attribute: it rose to or above this value
    below: float | None = None  # attribute: it fell below this value
    date: str | None = None  # a date attribute (traits.birthday, points_expire_at)
    at: TimeOfDay | None = None  # date: local time of day to act (default 09:00)
    before: Duration | None = None  # date: act this long before the date
    yearly: bool | None = None  # date: every year (default: true for month-day dates)


class CancelOn(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """An event that cancels the pending action (an order cancels the cart reminder)."""

    event: EventType | list[EventType]
    when: Cel | None = None


class Wait(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """How long to wait before acting, and what cancels the wait.

    ``for`` is a fixed duration; ``for_days`` a CEL expression, evaluated when
    the rule is entered, giving a number of days (per-category intervals).
    """

    for_: Duration | None = msgspec.field(default=None, name="for")
    for_days: Cel | None = None
    cancel_on: list[CancelOn] = []
    restart: bool = True  # a new trigger while waiting starts the wait again


class Action(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What to send: the channel, the template and the payload fields (CEL)."""

    channel: ActionChannel
    template: Annotated[str, Meta(min_length=1, max_length=200)]
    payload: dict[str, Cel] = {}
    deadline: Duration = "24h"  # not worth sending later than this after the decision


class Limits(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    once_per: Duration | None = None  # fire at most once per this long per customer
    max_entries: Annotated[int, Meta(ge=1)] | None = None  # enter at most this often, ever


class Goal(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The conversion the rule is for, attributed within ``within`` of a send
    (or of a hold-out, to measure lift)."""

    event: EventType
    when: Cel | None = None
    within: Duration = "3d"


class Active(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """A campaign window: the rule only enters customers between these times."""

    from_: Timestamp | None = msgspec.field(default=None, name="from")
    until: Timestamp | None = None


class Rule(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One trigger rule: ``rules/<id>.yaml``."""

    id: RuleId
    trigger: Trigger
    action: Action
    description: str = ""
    enabled: bool = True
    priority: Annotated[int, Meta(ge=0, le=100)] = 50
    category: Category = "marketing"
    active: Active | None = None
    params: dict[str, Any] = {}  # constants the rule's CEL reads as rule.params.<name>
    wait: Wait | None = None
    conditions: list[Cel] = []  # all must hold when the action is due
    limits: Limits = Limits()
    holdout: Percent = 0.0  # share of customers held out (recorded, not messaged)
    goal: Goal | None = None


class QuietHours(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """No marketing on these channels between ``start`` and ``end``, local time;
    what falls inside is deferred to ``end``, never dropped."""

    start: TimeOfDay = "21:00"
    end: TimeOfDay = "08:00"
    channels: list[ChannelName] = msgspec.field(default_factory=lambda: ["email", "sms", "push"])


class Caps(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Marketing messages per customer, over all channels, in a rolling day and week."""

    daily: Annotated[int, Meta(ge=1)] | None = 2
    weekly: Annotated[int, Meta(ge=1)] | None = 5


class Policy(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """``rules/policy.yaml``: the guards every marketing rule obeys."""

    timezone: str = "UTC"  # for customers whose profile has no time zone
    smart_sending: dict[ChannelName, Duration] = msgspec.field(
        default_factory=lambda: {"email": "16h", "sms": "16h", "push": "16h"}
    )
    quiet_hours: QuietHours | None = QuietHours()
    suppress_while_ticket_open: bool = True
    consent_required: list[ChannelName] = msgspec.field(
        default_factory=lambda: ["email", "sms", "push"]
    )
    caps: Caps = Caps()
    preferred_fallback: list[ChannelName] = msgspec.field(
        default_factory=lambda: ["email", "push", "sms", "in_app"]
    )


# Rule tests ---------------------------------------------------------------------


class Expected(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    at: str
    rule: str
    outcome: Literal[
        "entered", "fired", "suppressed", "held_out", "deferred", "cancelled", "exited", "converted"
    ]
    customer: str | None = None
    reason: str | None = None
    channel: str | None = None


class RuleTest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """``rules/tests/<name>.yaml``: given these events, expect these decisions."""

    name: str
    start: Timestamp
    # Each: ``at`` (RFC 3339, or an offset from ``start`` such as +30m), ``type``,
    # ``customer`` (for customer_id) and the event's own fields (docs/events.md).
    events: list[dict[str, Any]]
    expect: list[Expected]
    rules: list[str] = []  # the rules under test (default: every rule)
    outcomes: list[str] = []  # outcomes compared (default: every outcome but entered)
    until: str | None = None  # run the clock to here (default: 1 day after the last event)
    contactable: bool = False  # every customer has an address and consent on every channel
    description: str = ""


def json_schema(kind: type[Struct]) -> dict[str, Any]:
    """JSON Schema for editors, generated from the Structs above."""
    schema: dict[str, Any] = msgspec.json.schema(kind)
    return schema
