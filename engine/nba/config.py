"""The format of ``rules/actions.yaml``, as msgspec Structs: one source for
validation (with lines and columns, through ``engine.rules.yamlcheck``), the
compiled book and the JSON Schema editors read.

Eligibility and reward conditions are CEL over the same flat customer context
the trigger rules read (docs/rule-fields.md), so a marketer writes them the
way they already write rule conditions.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from engine.rules.model import Cel, Duration, EventType, Percent

ActionId = Annotated[
    str,
    Meta(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Lower-case letters, digits and underscores, starting with a letter.",
        examples=["discount"],
    ),
]
Share = Annotated[float, Meta(ge=0, le=1, description="A share, 0 to 1.")]

# The customer's own doings that can change what is eligible; message_* events
# are Pulse's own sends and custom events are mostly rewards (clicks).
DECIDE_ON: tuple[str, ...] = (
    "identify",
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "cart_viewed",
    "checkout_started",
    "order_placed",
    "order_refunded",
    "loyalty_points_adjusted",
    "store_visit",
)


class PolicySettings(
    Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """How the bandit explores, holds out and waits for rewards."""

    exploration: Annotated[
        Share,
        Meta(
            description="Share of decisions (0 to 1) that pick an eligible action at random "
            "instead of the one the model rates best, so every action keeps being tried "
            "(default 0.05)."
        ),
    ] = 0.05
    holdout: Annotated[
        Percent,
        Meta(
            description="Percentage of customers (0 to 100) who always get the control action, "
            "to measure the policy's lift; always the same customers (default 5)."
        ),
    ] = 5.0
    control: Annotated[
        ActionId,
        Meta(
            description="The action of the hold-out and the answer when nothing else is "
            "eligible; it must be one of `actions` and is always eligible (default nothing)."
        ),
    ] = "nothing"
    window: Annotated[
        Duration,
        Meta(
            description="How long after a decision its rewards count (default 24h); a decision "
            "stands for the customer this long unless its action stops being eligible."
        ),
    ] = "24h"
    reward_noise: Annotated[
        float,
        Meta(
            gt=0,
            le=100,
            description="How much one reward varies around its expectation (a variance, "
            "default 0.1): smaller trusts each reward more and explores less.",
        ),
    ] = 0.1
    max_pending: Annotated[
        int,
        Meta(
            ge=1,
            le=10_000_000,
            description="Decisions awaiting their reward that one policy keeps at most; past "
            "it the oldest is settled early with what it has earned (default 100000).",
        ),
    ] = 100_000
    decide_on: Annotated[
        list[EventType],
        Meta(
            description="Event types after which the customer's next action is looked at again "
            "(default: the customer's own activity, not message_* or custom events)."
        ),
    ] = msgspec.field(default_factory=lambda: list(DECIDE_ON))


class Reward(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """An event that rewards the customer's live decision."""

    event: Annotated[
        EventType, Meta(description="The event type that earns the reward (docs/events.md).")
    ]
    when: Annotated[
        Cel | None,
        Meta(
            description="A CEL condition on the event and the profile it updated, e.g. "
            'event.name == "offer_clicked" for a custom event.'
        ),
    ] = None
    value: Annotated[
        float,
        Meta(
            gt=0,
            le=1,
            description="What the reward is worth, above 0 and at most 1; a decision keeps the "
            "largest value it earns within the window.",
        ),
    ]


class ActionSpec(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One action the policy may choose."""

    id: ActionId
    description: Annotated[str, Meta(description="What the action is, in plain words.")] = ""
    eligible: Annotated[
        Cel | None,
        Meta(
            description="A CEL condition over the customer (profile, cart, local, now, "
            "recommendations, rule.params): the action may be chosen only when it holds. "
            "Without it the action is always eligible; an expression that fails counts as false."
        ),
    ] = None
    weight: Annotated[
        float,
        Meta(
            ge=0,
            le=1,
            description="What a reward is worth after this action, 0 to 1 (default 1): a "
            "discount that gives away margin earns, say, 0.7 of an order.",
        ),
    ] = 1.0
    params: Annotated[
        dict[str, Any],
        Meta(
            description="Constants for the website (copied into each decision) that the "
            "eligibility reads as rule.params.<name>."
        ),
    ] = {}


class ActionsFile(
    Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """``rules/actions.yaml``: the next-best-action policy, its rewards and its actions."""

    policy: Annotated[
        PolicySettings, Meta(description="Exploration, hold-out and the reward window.")
    ] = PolicySettings()
    rewards: Annotated[
        list[Reward],
        Meta(min_length=1, description="The events that reward a decision, and their values."),
    ]
    actions: Annotated[
        list[ActionSpec],
        Meta(
            min_length=2,
            description="The actions, the control among them, in the order the website lists them.",
        ),
    ]


def json_schema() -> dict[str, Any]:
    """JSON Schema of actions.yaml, for editors."""
    return msgspec.json.schema(ActionsFile)
