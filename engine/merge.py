"""Merging two profiles of one person: an anonymous one into the known one, or
(after an alias) one known customer's into another's.

Rules (docs/identity.md): counts, sessions, loyalty points and message
engagement add up; category affinities add as decayed scores; order histories
are united by order id (an order recorded under both ids counts once); first
seen is the earliest and last seen the latest event time; carts are united
(the same SKU adds quantities, the price of the later cart wins); recently
viewed items interleave by view time; consent per channel is the later
decision; open tickets are united; the known customer's traits win and the
other's fill the gaps; of two pending actions of one rule and kind the later
one is kept; rule journeys add up and recent sends are united; linked
anonymous ids are united; the account of the later group call is kept (the
known customer's on a tie). Apart from traits and that tie, the result does
not depend on which profile is ``into``. Tier and segments are not merged but
recomputed by the engine on the next event it applies, which the merge always
comes with.
"""

from __future__ import annotations

from engine.profile import (
    MAX_ORDERS_KEPT,
    RECENT_ITEMS,
    Account,
    CartLine,
    CustomerState,
    Decayed,
    Engagement,
    OrderRecord,
    Viewed,
    points_held,
)
from engine.recs.shopper import merge_items


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
        kept = latest.get(v.sku)
        if kept is None:
            latest[v.sku] = Viewed(v.sku, v.ts, v.views)
        else:
            kept.ts, kept.views = max(kept.ts, v.ts), kept.views + v.views
    into.recently_viewed = sorted(latest.values(), key=lambda v: (-v.ts, v.sku))[:RECENT_ITEMS]

    # A cart last changed before the latest order of either profile was bought
    # by that order (an order empties the cart it follows).
    last_order = max(into.last_order_at, other.last_order_at)
    if into.cart and into.cart_updated_at <= last_order:
        into.cart.clear()
    other_cart = other.cart if other.cart_updated_at > last_order else {}
    other_newer = other.cart_updated_at > into.cart_updated_at
    for sku, line in other_cart.items():
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

    merge_items(into.shopper, other.shopper)
    into.sessions += other.sessions
    into.session_started_at = max(into.session_started_at, other.session_started_at)
    for category, score in other.affinity.items():
        mine_a = into.affinity.get(category)
        if mine_a is None:
            into.affinity[category] = Decayed(score.value, score.at)
        else:
            mine_a.add(score.value, score.at)

    into.orders += other.orders
    into.revenue += other.revenue
    into.refunds += other.refunds
    into.last_order_at = max(into.last_order_at, other.last_order_at)
    history = {
        o.order_id: OrderRecord(o.order_id, o.ts, o.total, o.refunded, o.points, o.expired)
        for o in into.order_history
    }
    for o in other.order_history:
        if o.order_id in history:
            # One order recorded under both ids (two known customers, one
            # person): it counts once, with its points.
            into.orders -= 1
            into.revenue -= o.total - o.refunded
            into.loyalty_points -= points_held(o)
        history[o.order_id] = OrderRecord(
            o.order_id, o.ts, o.total, o.refunded, o.points, o.expired
        )
    into.order_history = sorted(history.values(), key=lambda o: (o.ts, o.order_id))[
        -MAX_ORDERS_KEPT:
    ]
    into.loyalty_points = max(0, into.loyalty_points + other.loyalty_points)
    into.tier_review_at = 0.0  # the order history changed: review the tier
    for channel, seen in other.engagement.items():
        mine_e = into.engagement.get(channel)
        if mine_e is None:
            into.engagement[channel] = Engagement(
                seen.sent, seen.opened, seen.clicked, seen.bounced, seen.last_at
            )
        else:
            mine_e.sent += seen.sent
            mine_e.opened += seen.opened
            mine_e.clicked += seen.clicked
            mine_e.bounced += seen.bounced
            mine_e.last_at = max(mine_e.last_at, seen.last_at)
    if other.active_hours:
        mine_h = into.active_hours or [0] * 24
        into.active_hours = [a + b for a, b in zip(mine_h, other.active_hours, strict=True)]

    for channel, decision in other.consent.items():
        mine_c = into.consent.get(channel)
        if mine_c is None or decision.supersedes(mine_c):
            into.consent[channel] = decision
    into.open_tickets = sorted(set(into.open_tickets) | set(other.open_tickets))
    for key, value in other.traits.items():
        if key not in into.traits:
            into.traits[key] = value
            into.trait_times[key] = other.trait_times.get(key, 0.0)
    for order_id, amount in other.pending_refunds.items():
        into.pending_refunds.setdefault(order_id, amount)
    _merge_rules(into, other)
    for event_id, ts in other.seen_ids.items():
        into.seen_ids[event_id] = max(ts, into.seen_ids.get(event_id, ts))
    into.duplicates += other.duplicates
    # What a known customer's profile brings (an alias of two customers): its
    # linked ids, the profiles it had absorbed, its account.
    for linked in other.anonymous_ids:
        if linked not in into.anonymous_ids:
            into.anonymous_ids.append(linked)
    for previous in other.merged_ids:
        if previous not in into.merged_ids:
            into.merged_ids.append(previous)
    if other.account is not None and (
        into.account is None or other.account.updated_at > into.account.updated_at
    ):
        into.account = Account(
            id=other.account.id,
            traits=dict(other.account.traits),
            updated_at=other.account.updated_at,
        )
    return into


def _merge_rules(into: CustomerState, other: CustomerState) -> None:
    for theirs in other.pending:
        mine_p = next(
            (p for p in into.pending if p.rule_id == theirs.rule_id and p.kind == theirs.kind), None
        )
        if mine_p is None:
            into.pending.append(theirs)
        elif theirs.due > mine_p.due:
            into.pending[into.pending.index(mine_p)] = theirs
    for rule_id, journey in other.journeys.items():
        mine_j = into.journeys.get(rule_id)
        if mine_j is None:
            into.journeys[rule_id] = journey
            continue
        mine_j.entries += journey.entries
        mine_j.fired += journey.fired
        if journey.last_entry_at > mine_j.last_entry_at:
            mine_j.last_entry_at, mine_j.last_origin = journey.last_entry_at, journey.last_origin
        mine_j.last_fired_at = max(mine_j.last_fired_at, journey.last_fired_at)
        if journey.goal_until > mine_j.goal_until:
            mine_j.goal_until = journey.goal_until
            mine_j.goal_group, mine_j.goal_trigger = journey.goal_group, journey.goal_trigger
    into.sent = sorted((*into.sent, *other.sent), key=lambda s: (s.ts, s.channel, s.rule_id))
