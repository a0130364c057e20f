"""Built-in segments derived from a profile, kept as Redis sets for targeting.

A segment is a pure function of the state, recomputed after every event; the
engine emits a change only when membership changes, so the Redis sets are
written with absolute membership (SADD / SREM), never counted.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.profile import CustomerState

SEGMENTS: dict[str, Callable[[CustomerState], bool]] = {
    "prospect": lambda s: s.orders == 0,
    "first_time_buyer": lambda s: s.orders == 1,
    "repeat_buyer": lambda s: s.orders >= 2,
    "active_cart": lambda s: bool(s.cart),
    "open_support_ticket": lambda s: bool(s.open_tickets),
    "email_reachable": lambda s: (
        "email" in s.traits and (c := s.consent.get("email")) is not None and c.granted
    ),
    "identified": lambda s: not s.customer_id.startswith("anon:"),
}


def segments_of(state: CustomerState) -> list[str]:
    names = [name for name, test in SEGMENTS.items() if test(state)]
    if state.tier:
        names.append(f"tier:{state.tier}")
    return names
