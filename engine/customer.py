"""The per-customer state machine: ``apply(state, event) -> (state, effects)``.

Pure: no I/O, no clocks, no runtime imports. An event is applied as of its own
timestamp and a pending rule action as of its due time, so the same events
give the same state and the same decisions however fast, late or often they
are processed. The dataflow turns the returned effects into Redis writes and
Kafka records, and asks ``next_due`` when to call ``fire_due``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from engine import events as ev
from engine.loyalty import DEFAULT_PROGRAM, LoyaltyProgram
from engine.merge import merge_states
from engine.popularity import ItemSignal, item_signals
from engine.profile import (
    MAX_ORDERS_KEPT,
    RECENT_ITEMS,
    SESSION_GAP_S,
    CartLine,
    Consent,
    CustomerState,
    Decayed,
    Engagement,
    OrderRecord,
    Viewed,
)
from engine.rules.ruleset import RuleBook, RuleSet
from engine.rules.runtime import Rules
from engine.segments import segments_of
from engine.triggers import Decision
from engine.triggers import TriggerFired as TriggerFired  # re-exported for callers


class ProfileChanged(msgspec.Struct, frozen=True):
    """The customer's serving view must be rewritten from this state."""

    state: CustomerState


class ProfileRemoved(msgspec.Struct, frozen=True):
    """A profile that no longer exists on its own (merged into a known customer)."""

    customer_key: str


class DuplicateDropped(msgspec.Struct, frozen=True):
    customer_key: str
    event_id: str


class SegmentsChanged(msgspec.Struct, frozen=True):
    customer_key: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


Effect = (
    ProfileChanged
    | TriggerFired
    | Decision
    | ProfileRemoved
    | DuplicateDropped
    | SegmentsChanged
    | ItemSignal
)

# Per customer, at most this many recent event ids are remembered for dedup;
# past it the oldest are forgotten even inside the window.
MAX_SEEN_IDS = 2000


class Engine:
    """The rules in force plus the transition functions."""

    def __init__(
        self,
        rules: RuleBook | RuleSet | None = None,
        dedup_window_s: float = 86400.0,
        loyalty: LoyaltyProgram = DEFAULT_PROGRAM,
    ) -> None:
        book = rules if isinstance(rules, RuleBook) else RuleBook() if rules is None else None
        if book is None:
            assert isinstance(rules, RuleSet)
            book = RuleBook(rules)
        self.book = book
        self.rules = Rules(book, loyalty)
        self.dedup_window_s = dedup_window_s
        self.loyalty = loyalty

    def apply(
        self, state: CustomerState | None, event: ev.BaseEvent
    ) -> tuple[CustomerState, list[Effect]]:
        if state is None:
            state = CustomerState(customer_id=event.customer_key)
        ts = event.ts
        if state.erased_at:
            if ts <= state.erased_at:
                state.ignored_after_erasure += 1
                return state, []
            # New activity after the erasure: a fresh profile.
            state = CustomerState(customer_id=state.customer_id, erased_at=state.erased_at)
        if self._seen_before(state, event.event_id, ts):
            state.duplicates += 1
            return state, [
                DuplicateDropped(state.customer_id, event.event_id),
                ProfileChanged(state),
            ]
        kind = ev.event_type(event)
        # What was due before this event acts first, on the state it was due
        # on: keeps event-time order when the stream runs behind or replays.
        effects: list[Effect] = []
        if state.pending:
            due = Rules.next_due(state)
            if due is not None and due <= ts:
                effects.extend(self.rules.fire_due(state, ts))
        before = self.rules.watch(state, ts)
        linked = event.anonymous_id
        if (
            linked is not None
            and event.customer_id is not None
            and linked not in state.anonymous_ids
        ):
            state.anonymous_ids.append(linked)
        first = state.events_total == 0
        if first or ts < state.first_seen:
            state.first_seen = ts
        if first or ts - state.last_seen > SESSION_GAP_S:
            state.sessions += 1
            state.session_started_at = ts
        state.last_seen = max(state.last_seen, ts)
        state.events_total += 1
        state.event_counts[kind] = state.event_counts.get(kind, 0) + 1
        _update_profile(state, event, ts, self.loyalty)
        if self.loyalty.points_expire_s is not None and state.order_history:
            # As of the latest event time seen, so an order arriving late is
            # expired as if it had come in order.
            _expire_points(state, state.last_seen, self.loyalty.points_expire_s)
        _count_hour(state, ts)  # after identify traits: its own time zone counts
        effects.extend(item_signals(event))
        self._derive(state, ts, effects)
        effects.extend(self.rules.on_event(state, event, ts, before))
        effects.append(ProfileChanged(state))
        return state, effects

    def fire_due(self, state: CustomerState, until: float) -> list[Effect]:
        """Pending rule actions due by ``until`` (event time), decided as of their due times."""
        if not state.pending:
            return []
        # Rule memory is not part of the serving view: no profile write needed.
        return list(self.rules.fire_due(state, until))

    def absorb(
        self, state: CustomerState | None, other: CustomerState, customer_id: str
    ) -> tuple[CustomerState, list[Effect]]:
        """Merge another profile of the same person (an anonymous one) into ``state``."""
        if state is not None and state.erased_at and other.last_seen <= state.erased_at:
            return state, []  # history from before the erasure stays erased
        state = merge_states(state or CustomerState(customer_id=customer_id), other)
        effects: list[Effect] = []
        self._derive(state, state.last_seen, effects)
        effects.append(ProfileChanged(state))
        return state, effects

    @staticmethod
    def erase(
        state: CustomerState | None, customer_key: str, requested_at: float
    ) -> tuple[CustomerState, list[Effect]]:
        """Forget everything about a customer but the time of the erasure."""
        effects: list[Effect] = [ProfileRemoved(customer_key)]
        if state is not None and state.segments:
            effects.append(SegmentsChanged(customer_key, (), tuple(state.segments)))
        erased_at = max(requested_at, state.erased_at if state is not None else 0.0)
        return CustomerState(customer_id=customer_key, erased_at=erased_at), effects

    def _derive(self, state: CustomerState, ts: float, effects: list[Effect]) -> None:
        """Attributes computed from the rest of the state: tier and segments."""
        self._update_tier(state, ts)
        segments = segments_of(state)
        if segments != state.segments:
            old, new = set(state.segments), set(segments)
            effects.append(
                SegmentsChanged(
                    state.customer_id, tuple(sorted(new - old)), tuple(sorted(old - new))
                )
            )
            state.segments = segments

    def _update_tier(self, state: CustomerState, ts: float) -> None:
        """Tier by rolling spend. Recomputed only when it can change: after an
        order, refund or merge (the history changed: ``tier_review_at`` reset to
        0), or once the oldest order in the window may have left it."""
        now = max(state.last_seen, ts)
        if state.tier and now < state.tier_review_at:
            return
        since = now - self.loyalty.window_s
        spend = 0.0
        oldest = math.inf
        for order in state.order_history:
            if order.ts >= since:
                spend += order.total - order.refunded
                oldest = min(oldest, order.ts)
        state.tier_review_at = oldest + self.loyalty.window_s
        tier = self.loyalty.tier_for(spend)
        if tier != state.tier:
            state.previous_tier, state.tier, state.tier_changed_at = state.tier, tier, ts

    def _seen_before(self, state: CustomerState, event_id: str, ts: float) -> bool:
        seen = state.seen_ids
        if event_id in seen:
            return True
        seen[event_id] = ts
        if len(seen) > MAX_SEEN_IDS:
            horizon = max(state.last_seen, ts) - self.dedup_window_s
            kept = sorted(((t, i) for i, t in seen.items() if t >= horizon), reverse=True)
            state.seen_ids = {i: t for t, i in kept[: MAX_SEEN_IDS * 3 // 4]}
        return False

    @staticmethod
    def next_due(state: CustomerState) -> float | None:
        return Rules.next_due(state)


def _update_profile(
    state: CustomerState, event: ev.BaseEvent, ts: float, loyalty: LoyaltyProgram
) -> None:
    match event:
        case ev.ProductView(sku=sku, category=category):
            _remember_view(state, sku, ts)
            if category:
                state.category_views[category] = state.category_views.get(category, 0) + 1
                _affinity(state, category, 1.0, ts)
        case ev.AddToCart(sku=sku, price=price, quantity=qty, category=category, name=name):
            if category:
                _affinity(state, category, 3.0, ts)
            if ts < state.last_order_at:
                # Arrived after an order that followed it (another partition,
                # an anonymous id's step): that order bought it, as a merge
                # decides for a whole cart (engine/merge.py).
                return
            line = state.cart.get(sku)
            if line is None:
                state.cart[sku] = CartLine(sku, qty, price, category, name, ts)
            else:
                line.quantity += qty
                if ts >= line.price_at:  # the price of the latest add, by event time
                    line.price, line.price_at = price, ts
            state.cart_updated_at = max(state.cart_updated_at, ts)
        case ev.RemoveFromCart(sku=sku, quantity=qty):
            line = state.cart.get(sku)
            if line is not None:
                if qty is None or qty >= line.quantity:
                    del state.cart[sku]
                else:
                    line.quantity -= qty
            state.cart_updated_at = max(state.cart_updated_at, ts)
        case ev.OrderPlaced(order_id=order_id, total=total, items=items):
            state.orders += 1
            state.revenue += total
            state.last_order_at = max(state.last_order_at, ts)
            record = OrderRecord(order_id, ts, total, points=loyalty.points_for(total))
            state.loyalty_points += record.points
            _record_order(state, record)
            if order_id in state.pending_refunds:
                _settle_early_refund(state, record, state.pending_refunds.pop(order_id))
            for item in items:
                if item.category:
                    _affinity(state, item.category, 5.0, ts)
            # The cart as of the order is bought; lines added after it stay.
            if ts >= state.cart_updated_at:
                state.cart.clear()
            state.cart_updated_at = max(state.cart_updated_at, ts)
        case ev.OrderRefunded(order_id=order_id, amount=amount):
            state.refunds += 1
            known = next((o for o in state.order_history if o.order_id == order_id), None)
            if known is not None:
                _refund(state, known, amount)
            else:
                # The order is unknown: too old for the history, or not arrived
                # yet. A stated amount counts now; the order, if it comes, is
                # settled against it (see _settle_early_refund).
                if amount is not None:
                    state.revenue -= amount
                    state.loyalty_points = max(0, state.loyalty_points - loyalty.points_for(amount))
                _remember_pending(state, order_id, amount)
        case ev.LoyaltyPointsAdjusted(points=points):
            state.loyalty_points = max(0, state.loyalty_points + points)
        case ev.MessageSent(message_channel=channel):
            _engagement(state, channel).sent += 1
        case ev.MessageOpened(message_channel=channel):
            _engaged(state, channel, ts).opened += 1
        case ev.MessageClicked(message_channel=channel):
            _engaged(state, channel, ts).clicked += 1
        case ev.MessageBounced(message_channel=channel):
            _engagement(state, channel).bounced += 1
        case ev.MessageUnsubscribed(message_channel=channel):
            _decide_consent(state, channel, Consent(False, ts))
        case ev.ConsentChanged(consent_channel=channel, granted=granted):
            _decide_consent(state, channel, Consent(granted, ts))
        case ev.SupportTicketOpened(ticket_id=ticket):
            if ticket not in state.open_tickets:
                state.open_tickets.append(ticket)
        case ev.SupportTicketClosed(ticket_id=ticket):
            if ticket in state.open_tickets:
                state.open_tickets.remove(ticket)
        case ev.Identify(traits=traits):
            for key, value in msgspec.structs.asdict(traits).items():
                if value is not None and ts >= state.trait_times.get(key, -math.inf):
                    state.traits[key] = value
                    state.trait_times[key] = ts
        case _:
            pass


def _affinity(state: CustomerState, category: str, weight: float, ts: float) -> None:
    score = state.affinity.get(category)
    if score is None:
        state.affinity[category] = Decayed(weight, ts)
    else:
        score.add(weight, ts)


def _refund(state: CustomerState, record: OrderRecord, amount: float | None) -> None:
    """Refund part or all of a known order, taking back its points in proportion
    (unless they have expired already)."""
    state.tier_review_at = 0.0  # the rolling spend changed
    refundable = record.total - record.refunded
    refund = refundable if amount is None else min(amount, refundable)
    points_before = _points_refunded(record)
    record.refunded += refund
    state.revenue -= refund
    if not record.expired:
        taken = _points_refunded(record) - points_before
        state.loyalty_points = max(0, state.loyalty_points - taken)


def _expire_points(state: CustomerState, ts: float, expire_s: float) -> None:
    """Points earned more than ``expire_s`` before ``ts`` leave the balance.

    Lazily, at the customer's next event (event time): the same history gives
    the same balance however it is processed. Spent points are not traced to
    the orders that earned them; the balance never goes below zero.
    """
    for order in state.order_history:  # oldest first
        if order.ts + expire_s > ts:
            break
        if order.expired or order.points <= 0:
            continue
        order.expired = True
        remaining = order.points - _points_refunded(order)
        state.loyalty_points = max(0, state.loyalty_points - remaining)


def points_held(record: OrderRecord) -> int:
    """Points an order still contributes: earned, less refunded, none once expired."""
    return 0 if record.expired else record.points - _points_refunded(record)


def _points_refunded(record: OrderRecord) -> int:
    if record.total <= 0:
        return record.points if record.refunded > 0 else 0
    return int(record.points * min(1.0, record.refunded / record.total) + 1e-9)


def _settle_early_refund(state: CustomerState, record: OrderRecord, amount: float | None) -> None:
    """An order whose refund arrived first: apply it as if in order."""
    if amount is None:
        _refund(state, record, None)
        return
    # The stated amount was already taken from revenue and points; undo that
    # and refund the order properly (which also caps it at the order total).
    state.revenue += amount
    state.loyalty_points += min(
        record.points, int(amount * (record.points / record.total)) if record.total > 0 else 0
    )
    _refund(state, record, amount)


def _remember_pending(state: CustomerState, order_id: str, amount: float | None) -> None:
    pending = state.pending_refunds
    if order_id in pending and amount is not None and pending[order_id] is not None:
        pending[order_id] = (pending[order_id] or 0.0) + amount
    else:
        pending[order_id] = amount
    while len(pending) > MAX_ORDERS_KEPT:
        del pending[next(iter(pending))]


def _decide_consent(state: CustomerState, channel: str, decision: Consent) -> None:
    current = state.consent.get(channel)
    if current is None or decision.supersedes(current):
        state.consent[channel] = decision


def _record_order(state: CustomerState, record: OrderRecord) -> None:
    state.tier_review_at = 0.0  # the rolling spend changed
    history = state.order_history
    pos = len(history)
    while pos > 0 and history[pos - 1].ts > record.ts:
        pos -= 1
    history.insert(pos, record)
    del history[:-MAX_ORDERS_KEPT]


def _engagement(state: CustomerState, channel: str) -> Engagement:
    found = state.engagement.get(channel)
    if found is None:
        found = state.engagement[channel] = Engagement()
    return found


def _engaged(state: CustomerState, channel: str, ts: float) -> Engagement:
    found = _engagement(state, channel)
    found.last_at = max(found.last_at, ts)
    return found


@lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _count_hour(state: CustomerState, ts: float) -> None:
    """Activity by hour of day in the customer's own time zone (UTC if unknown)."""
    zone = _zone(state.traits["timezone"]) if "timezone" in state.traits else UTC
    hour = datetime.fromtimestamp(ts, tz=zone).hour
    if not state.active_hours:
        state.active_hours = [0] * 24
    state.active_hours[hour] += 1


def _remember_view(state: CustomerState, sku: str, ts: float) -> None:
    """Keep the latest view time per SKU, most recent first by event time."""
    viewed = state.recently_viewed
    views = 1
    for i, v in enumerate(viewed):
        if v.sku == sku:
            if v.ts >= ts:
                v.views += 1
                return
            views = v.views + 1
            del viewed[i]
            break
    pos = 0
    while pos < len(viewed) and viewed[pos].ts > ts:
        pos += 1
    viewed.insert(pos, Viewed(sku, ts, views))
    del viewed[RECENT_ITEMS:]
