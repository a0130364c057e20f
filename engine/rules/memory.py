"""What a customer's state remembers about rules: pending actions, journeys, sends.

These live inside ``CustomerState``, so they are snapshotted and recovered
with the profile: a SIGKILL neither loses a pending wait nor fires it twice.
"""

from __future__ import annotations

from typing import cast

import msgspec

from engine.events import BaseEvent, Event

WAIT = "wait"  # an entered rule waiting out its ``wait``
DEFER = "defer"  # a decision deferred by quiet hours
INACTIVE = "inactive"  # an inactivity trigger, re-armed by every activity
DATE = "date"  # a date trigger (birthday, points expiry)


# The Structs below are not tracked by the cyclic GC (gc=False): values only,
# see engine.profile.CustomerState.
class Pending(msgspec.Struct, array_like=True, gc=False):
    """A timed action: when ``due`` (event time) passes, the rule acts or enters."""

    rule_id: str
    kind: str
    due: float
    origin_id: str  # the originating event id (or "<attribute>:<date>" for dates)
    entry: int = 0  # the entry number it belongs to (0 for inactivity and date arms)
    event: Event | None = None  # the originating event: ``event`` in CEL when due
    armed_from: str = ""  # date triggers: the attribute value the date came from


class Journey(msgspec.Struct, array_like=True, gc=False):
    """One rule's history with one customer."""

    entries: int = 0
    last_entry_at: float = 0.0
    fired: int = 0
    last_fired_at: float = 0.0
    last_origin: str = ""  # the origin of the latest entry (a date occurrence enters once)
    # Conversion attribution: a goal event up to ``goal_until`` counts for
    # ``goal_group`` ("treated" after a send, "holdout" after a hold-out).
    goal_until: float = 0.0
    goal_group: str = ""
    goal_trigger: str = ""


class Sent(msgspec.Struct, array_like=True, gc=False):
    """A marketing message the engine decided to send (for caps and smart sending)."""

    ts: float
    channel: str
    rule_id: str


def kept(event: BaseEvent | None) -> Event | None:
    """An event as a pending action keeps it: typed as the tagged union, so a
    snapshot decodes it back to its own type (every event is one of them)."""
    return cast("Event | None", event)
