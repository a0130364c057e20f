"""Merging two profiles of one person: the anonymous one into the known one.

Rules (docs/identity.md): counts add up; first seen is the earliest and last
seen the latest event time; carts are united (the same SKU adds quantities, the
price of the later cart wins); recently viewed items interleave by view time;
consent per channel is the later decision; open tickets are united; the known
customer's traits win and the anonymous ones fill the gaps; a pending timer
keeps the later due time. Apart from traits, which favour ``into``, the result
does not depend on which profile is ``into``.
"""

from __future__ import annotations

from engine.profile import RECENT_ITEMS, CartLine, CustomerState, Viewed


def merge_states(into: CustomerState, other: CustomerState) -> CustomerState:
    """Fold ``other`` into ``into`` (which keeps its customer id) and return it."""
    if other.events_total:
        if into.events_total == 0:
            into.first_seen = other.first_seen
        else:
            into.first_seen = min(into.first_seen, other.first_seen)
    into.last_seen = max(into.last_seen, other.last_seen)
    into.events_total += other.events_total
    for kind, n in other.event_counts.items():
        into.event_counts[kind] = into.event_counts.get(kind, 0) + n
    for category, n in other.category_views.items():
        into.category_views[category] = into.category_views.get(category, 0) + n

    latest: dict[str, Viewed] = {}
    for v in (*into.recently_viewed, *other.recently_viewed):
        if v.sku not in latest or v.ts > latest[v.sku].ts:
            latest[v.sku] = v
    into.recently_viewed = sorted(latest.values(), key=lambda v: (-v.ts, v.sku))[:RECENT_ITEMS]

    other_newer = other.cart_updated_at > into.cart_updated_at
    for sku, line in other.cart.items():
        mine = into.cart.get(sku)
        if mine is None:
            into.cart[sku] = CartLine(sku, line.quantity, line.price, line.category, line.name)
        else:
            mine.quantity += line.quantity
            if other_newer:
                mine.price = line.price
            mine.category = mine.category or line.category
            mine.name = mine.name or line.name
    into.cart_updated_at = max(into.cart_updated_at, other.cart_updated_at)

    into.orders += other.orders
    into.revenue += other.revenue
    into.last_order_at = max(into.last_order_at, other.last_order_at)

    for channel, decision in other.consent.items():
        mine_c = into.consent.get(channel)
        if mine_c is None or decision.ts > mine_c.ts:
            into.consent[channel] = decision
    into.open_tickets = sorted(set(into.open_tickets) | set(other.open_tickets))
    for key, value in other.traits.items():
        into.traits.setdefault(key, value)
    for rule_id, timer in other.timers.items():
        mine_t = into.timers.get(rule_id)
        if mine_t is None or timer.due > mine_t.due:
            into.timers[rule_id] = timer
    for event_id, ts in other.seen_ids.items():
        into.seen_ids[event_id] = max(ts, into.seen_ids.get(event_id, ts))
    into.duplicates += other.duplicates
    return into
