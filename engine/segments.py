"""Built-in segments derived from a profile, kept as Redis sets for targeting.

Besides the named segments, a customer is in ``tier:<tier>`` and, once a
Segment group call named their account, in ``account:<group id>``.

A segment is a pure function of the state, recomputed after every event that
can change what it reads (``SEGMENT_INPUTS_CHANGED_BY``, a tier change, a
customer's first event, a merge); the engine emits a change only when
membership changes, so the Redis sets are written with absolute membership
(SADD / SREM), never counted.
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


# The event types whose profile update can change what SEGMENTS read (orders,
# cart, open tickets, traits, consent; the customer id never changes). On any
# other event the segments stay as they were, but for the tier segment, which
# follows the tier. Keep in step with SEGMENTS and engine.customer's updates:
# tests/unit/test_segment_inputs.py checks it against a recomputation.
SEGMENT_INPUTS_CHANGED_BY = frozenset(
    {
        "order_placed",
        "add_to_cart",
        "remove_from_cart",
        "support_ticket_opened",
        "support_ticket_closed",
        "identify",
        "consent_changed",
        "message_unsubscribed",
        "group",
    }
)


def segments_of(state: CustomerState) -> list[str]:
    names = [name for name, test in SEGMENTS.items() if test(state)]
    if state.tier:
        names.append(f"tier:{state.tier}")
    if state.account is not None:  # everyone of one account, for B2B targeting
        names.append(f"account:{state.account.id}")
    return names
