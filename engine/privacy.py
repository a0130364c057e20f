"""Right to erasure, as control messages on the stream.

An erasure travels through the dataflow like an event (on the control topic),
so it takes effect at one point of the stream in every worker. The customer's
state becomes a tombstone that remembers only when it was erased: events of
that customer up to that time (a replay, a late producer) are ignored, so the
profile cannot be resurrected from history; later activity starts afresh.
"""

from __future__ import annotations

import msgspec


class EraseCustomer(msgspec.Struct, frozen=True, tag="erase_customer", tag_field="type"):
    """Erase a customer and the anonymous ids linked to them."""

    customer_id: str
    requested_at: float  # epoch seconds; events up to this time are ignored afterwards
    request_id: str = ""
    anonymous_ids: tuple[str, ...] = ()


class EraseAnonymous(msgspec.Struct, frozen=True):
    anonymous_id: str
    requested_at: float
